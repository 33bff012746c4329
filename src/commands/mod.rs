//! The commands of the `inlet` binary other than `run` and `replay`:
//! `status`, `migrate`.

pub mod migrate;
pub mod status;
