//! Shared test harness, by purpose:
//!
//! - [`brokers`]: Kafka-protocol brokers (mock cluster, Tansu);
//! - [`producing`]: producing messages, recording where each landed;
//! - [`workspace`]: a test's directory, config file and table locations;
//! - [`process`]: the inlet binary, run to completion or in the background;
//! - [`tables`]: reading tables (delta-rs + parquet, DuckDB);
//! - [`assertions`]: exactly-once checks, waits for rows, the crash loop;
//! - [`sink`]: driving the Delta sink in this process;
//! - [`avro`], [`registry`], [`faults`], [`proxy`], [`s3`]: an Avro encoder,
//!   a mock Schema Registry, a fault-injecting object store, a TCP proxy
//!   that can refuse, and SeaweedFS as S3.
//!
//! Servers listen on 127.0.0.1 ports of their own choosing.
#![allow(dead_code)]

pub(crate) mod assertions;
pub(crate) mod avro;
pub(crate) mod brokers;
pub(crate) mod faults;
pub(crate) mod fixtures;
pub(crate) mod process;
pub(crate) mod producing;
pub(crate) mod proxy;
pub(crate) mod registry;
pub(crate) mod s3;
pub(crate) mod sink;
pub(crate) mod tables;
pub(crate) mod workspace;

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether CI requires the external parts (so a missing one is a failure,
/// not a skip).
pub(crate) fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("INLET_TEST_REQUIRE_ALL").is_some()
}
