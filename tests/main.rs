//! inlet's integration tests, one module per concern, built as one test
//! binary: each of these links DataFusion, delta-rs and librdkafka, so a
//! binary per file cost gigabytes of disk and a link step each.

mod common;

mod boundary;
mod bounded;
mod cdc;
mod cdc_partitioned;
mod cli;
mod compaction;
mod data_loss;
mod debezium;
mod dv;
mod exactly_once;
mod fencing;
mod formats;
mod ingest;
mod lakehouse;
mod layout;
mod metrics;
mod migrate;
mod poison;
mod protobuf;
mod rebalance;
mod replay_status;
mod s3;
mod shutdown;
mod tansu;
mod two_writers;
