//! Whose fault a sink error is, decided from the error's type once, here.
//!
//! The object store, the network and other writers racing on the log are the
//! environment: retried with backoff. A table inlet cannot use (not a table
//! where one must be, features or properties inlet refuses, credentials the
//! store rejects) is the operator's. Data inlet itself failed to shape is
//! inlet's. delta-rs errors of no clear kind count as the environment's: a
//! retry is bounded, and giving up then still stops the run non-zero.

use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
use deltalake::DeltaTableError;

use super::SinkError;
use crate::fault::{Classify, Fault};

impl Classify for SinkError {
    fn fault(&self) -> Fault {
        match self {
            SinkError::Table { .. } => Fault::Operator,
            SinkError::Internal { .. } => Fault::Internal,
            SinkError::Delta { source, .. } => delta_fault(source),
            SinkError::RetriesExhausted { .. } | SinkError::Interrupted { .. } => {
                Fault::Environment
            }
        }
    }
}

/// Whose fault a delta-rs error is.
pub fn delta_fault(e: &DeltaTableError) -> Fault {
    use DeltaTableError as E;
    match e {
        E::ObjectStore { source } => store_fault(source),
        E::Io { .. } | E::VersionAlreadyExists(_) => Fault::Environment,
        E::KernelError(k) => kernel_fault(k),
        E::Transaction { source } => transaction_fault(source),
        E::NotATable(_)
        | E::InvalidTableLocation(_)
        | E::MissingFeature { .. }
        | E::MetadataError(_)
        | E::InvalidJsonLog { .. }
        | E::UnsupportedColumnMapping { .. } => Fault::Operator,
        E::Parquet { .. }
        | E::Arrow { .. }
        | E::SchemaMismatch { .. }
        | E::SerializeLogJson { .. }
        | E::InvalidStatsJson { .. } => Fault::Internal,
        _ => Fault::Environment,
    }
}

/// Whose fault an object store error is.
pub fn store_fault(e: &object_store::Error) -> Fault {
    use object_store::Error as E;
    match e {
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::UnknownConfigurationKey { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::InvalidPath { .. } => Fault::Operator,
        _ => Fault::Environment,
    }
}

fn transaction_fault(e: &TransactionError) -> Fault {
    use TransactionError as E;
    match e {
        E::ObjectStore { source } => store_fault(source),
        E::CommitConflict(
            CommitConflictError::UnsupportedReaderVersion(_)
            | CommitConflictError::UnsupportedWriterVersion(_),
        )
        | E::UnsupportedTableFeatures(_)
        | E::TableFeaturesRequired(_)
        | E::DeltaTableAppendOnly => Fault::Operator,
        E::SerializeLogJson { .. } => Fault::Internal,
        // Conflicts are retried on a fresh snapshot, where a commit of the
        // same partition by another writer turns into a fence.
        _ => Fault::Environment,
    }
}

fn kernel_fault(e: &delta_kernel::Error) -> Fault {
    use delta_kernel::Error as E;
    match e {
        E::Backtraced { source, .. } => kernel_fault(source),
        E::ObjectStore(source) => store_fault(source),
        E::IOError(_) | E::Reqwest(_) | E::JoinFailure(_) | E::FileNotFound(_) => {
            Fault::Environment
        }
        E::Unsupported(_)
        | E::InvalidProtocol(_)
        | E::InvalidTableLocation(_)
        | E::InvalidUrl(_)
        | E::InvalidColumnMappingMode(_)
        | E::MissingMetadata
        | E::MissingProtocol
        | E::MissingMetadataAndProtocol
        | E::InvalidCheckpoint(_)
        | E::MalformedJson(_) => Fault::Operator,
        E::InternalError(_) => Fault::Internal,
        _ => Fault::Environment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_error(kind: &str) -> object_store::Error {
        let source = Box::new(std::io::Error::other("injected"));
        match kind {
            "generic" => object_store::Error::Generic {
                store: "S3",
                source,
            },
            "denied" => object_store::Error::PermissionDenied {
                path: "t/_delta_log".into(),
                source,
            },
            _ => object_store::Error::NotFound {
                path: "t/_delta_log/_last_checkpoint".into(),
                source,
            },
        }
    }

    #[test]
    fn store_errors_are_the_environments_unless_credentials_are_refused() {
        let e = DeltaTableError::ObjectStore {
            source: store_error("generic"),
        };
        assert_eq!(delta_fault(&e), Fault::Environment);
        let k =
            DeltaTableError::KernelError(delta_kernel::Error::ObjectStore(store_error("generic")));
        assert_eq!(delta_fault(&k), Fault::Environment, "{k}");
        let denied = DeltaTableError::ObjectStore {
            source: store_error("denied"),
        };
        assert_eq!(delta_fault(&denied), Fault::Operator);
        assert_eq!(
            delta_fault(&DeltaTableError::KernelError(
                delta_kernel::Error::FileNotFound("x".into())
            )),
            Fault::Environment
        );
    }

    #[test]
    fn conflicts_are_retried_and_unusable_tables_are_the_operators() {
        let conflict = DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction),
        };
        assert!(SinkError::Delta {
            table: "t".into(),
            source: conflict
        }
        .is_retryable());
        assert_eq!(
            delta_fault(&DeltaTableError::VersionAlreadyExists(3)),
            Fault::Environment
        );
        assert_eq!(
            delta_fault(&DeltaTableError::NotATable("t".into())),
            Fault::Operator
        );
        assert_eq!(
            SinkError::Table {
                table: "t".into(),
                message: "bad".into()
            }
            .fault(),
            Fault::Operator
        );
    }
}
