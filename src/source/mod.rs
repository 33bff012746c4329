//! Kafka: the consumer, its rebalance callback and metadata look-ups.

pub mod kafka;
pub mod loss;
pub mod watermarks;

pub use kafka::{
    client_config, create_consumer, list_partitions, to_rd_offset, InletContext, RebalanceHandler,
    Watermarks,
};
pub use loss::{DataLossError, RunKind};
