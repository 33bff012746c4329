//! Which tables inlet can append to, decided when a table is opened, before
//! anything is fetched: a table whose protocol needs a writer feature inlet's
//! commit path does not write (identity columns, type widening, ...) would
//! otherwise have
//! every commit refused after the data was read, and be retried as if the
//! object store were at fault.

use std::collections::HashSet;

use delta_kernel::table_features::TableFeature;
use deltalake::kernel::transaction::TransactionError;
use deltalake::kernel::{Metadata, Protocol, StructType};

use super::SinkError;

/// Field metadata that makes an append compute or check values inlet does
/// not (yet): writing the rows as they are would break the table's rules.
const FIELD_RULES: [(&str, &str); 3] = [
    (
        "delta.generationExpression",
        "a generated column (generatedColumns): inlet does not compute generation expressions",
    ),
    (
        "delta.invariants",
        "a column invariant (invariants): inlet does not enforce legacy invariants",
    ),
    (
        "delta.identity.start",
        "an identity column (identityColumns): inlet does not generate identity values",
    ),
];

/// The writer features delta-rs' commit path supports (its
/// `PROTOCOL` checker, as built with the `datafusion` feature), which
/// inlet's commits rely on as well. The checker itself needs a snapshot with
/// files; inlet's table state has none, so the check is made on the protocol.
fn supported_writer_features() -> HashSet<TableFeature> {
    HashSet::from([
        TableFeature::AppendOnly,
        TableFeature::TimestampWithoutTimezone,
        TableFeature::VariantType,
        TableFeature::VariantTypePreview,
        TableFeature::V2Checkpoint,
        TableFeature::ChangeDataFeed,
        TableFeature::Invariants,
        TableFeature::CheckConstraints,
        TableFeature::GeneratedColumns,
        TableFeature::ColumnMapping,
        TableFeature::DeletionVectors,
        TableFeature::Unknown("checkpointProtection".to_owned()),
        // Honoured by inlet's own commit (delta.rs, `stamp`): commitInfo
        // first with a monotonic inCommitTimestamp; baseRowId and
        // defaultRowCommitVersion on every add and the high-water mark
        // advanced in the same commit; other domains are never written.
        TableFeature::InCommitTimestamp,
        TableFeature::RowTracking,
        TableFeature::DomainMetadata,
        // Liquid clustering (and its Databricks preview name): appended
        // files are unclustered (no clusteringProvider), with statistics;
        // the clustering domain is kept as it is.
        TableFeature::ClusteredTable,
        TableFeature::Unknown("liquid".to_owned()),
        // Values are written in the table's current (widened) types.
        TableFeature::TypeWidening,
        TableFeature::TypeWideningPreview,
    ])
}

/// The reader features inlet reads: it reads a table's log (protocol,
/// metadata, txn actions, through the kernel for checkpoints), never its
/// data files, so delta-rs' reader set plus type widening (the log's
/// schema holds the current, widened types; appends write those).
fn supported_reader_features() -> HashSet<TableFeature> {
    HashSet::from([
        TableFeature::TimestampWithoutTimezone,
        TableFeature::DeletionVectors,
        TableFeature::VariantType,
        TableFeature::VariantTypePreview,
        TableFeature::V2Checkpoint,
        TableFeature::ColumnMapping,
        TableFeature::TypeWidening,
        TableFeature::TypeWideningPreview,
    ])
}

/// The reader features the protocol requires that inlet does not read.
fn can_read(protocol: &Protocol) -> Result<(), TransactionError> {
    let required: Vec<TableFeature> = match protocol.min_reader_version() {
        0 | 1 => Vec::new(),
        2 => vec![TableFeature::ColumnMapping],
        _ => protocol
            .reader_features()
            .map(<[_]>::to_vec)
            .unwrap_or_default(),
    };
    let supported = supported_reader_features();
    let missing: Vec<TableFeature> = required
        .into_iter()
        .filter(|f| !supported.contains(f))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TransactionError::UnsupportedTableFeatures(missing))
    }
}

/// Whether the table's protocol names writer feature `name`.
fn has_writer_feature(protocol: &Protocol, feature: &TableFeature) -> bool {
    let name = feature.to_string();
    protocol
        .writer_features()
        .is_some_and(|f| f.iter().any(|f| f == feature || f.to_string() == name))
}

/// Whether appends must assign row ids (`rowTracking` is supported).
pub(crate) fn tracks_row_ids(protocol: &Protocol) -> bool {
    has_writer_feature(protocol, &TableFeature::RowTracking)
}

/// Whether commits must carry an `inCommitTimestamp`: the feature is
/// supported and `delta.enableInCommitTimestamps` is true.
pub(crate) fn writes_in_commit_timestamps(protocol: &Protocol, metadata: &Metadata) -> bool {
    has_writer_feature(protocol, &TableFeature::InCommitTimestamp)
        && metadata
            .configuration()
            .get("delta.enableInCommitTimestamps")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Why `compact` cannot rewrite this table's files, if it cannot: its
/// rewrite goes through delta-rs, which neither carries row ids over
/// (materialised row id columns) nor writes in-commit timestamps, nor
/// physical column names.
pub(crate) fn compaction_refusal(protocol: &Protocol, metadata: &Metadata) -> Option<String> {
    let blocking = [
        (TableFeature::RowTracking, "row ids would not be kept"),
        (
            TableFeature::InCommitTimestamp,
            "the rewrite would not carry an in-commit timestamp",
        ),
        (
            TableFeature::TypeWidening,
            "delta-rs does not read the files written before a widening",
        ),
        (
            TableFeature::TypeWideningPreview,
            "delta-rs does not read the files written before a widening",
        ),
    ];
    let mut found: Vec<String> = blocking
        .iter()
        .filter(|(f, _)| has_writer_feature(protocol, f))
        .map(|(f, why)| format!("{f} ({why})"))
        .collect();
    if super::mapping::is_mapped(metadata.configuration()) {
        found.push(format!(
            "column mapping ({} = {}: the rewritten files would not keep the physical column names)",
            super::mapping::MODE,
            metadata.configuration()[super::mapping::MODE]
        ));
    }
    (!found.is_empty()).then(|| {
        format!(
            "inlet does not compact tables with {}; compact them with an engine that keeps these \
             features (e.g. Spark's OPTIMIZE)",
            found.join(", ")
        )
    })
}

/// delta-rs' `ProtocolChecker::can_write_to` on a protocol: the reader
/// features (inlet's, see [`supported_reader_features`]), then the writer
/// features the writer version implies.
fn can_write_to(protocol: &Protocol) -> Result<(), TransactionError> {
    use TableFeature as F;
    can_read(protocol)?;
    let v2 = [F::AppendOnly, F::Invariants];
    let required: Option<Vec<TableFeature>> = match protocol.min_writer_version() {
        0 | 1 => None,
        2 => Some(v2.to_vec()),
        3 => Some([&v2[..], &[F::CheckConstraints]].concat()),
        4 => Some(
            [
                &v2[..],
                &[F::CheckConstraints, F::ChangeDataFeed, F::GeneratedColumns],
            ]
            .concat(),
        ),
        5 => Some(
            [
                &v2[..],
                &[
                    F::CheckConstraints,
                    F::ChangeDataFeed,
                    F::GeneratedColumns,
                    F::ColumnMapping,
                ],
            ]
            .concat(),
        ),
        6 => Some(
            [
                &v2[..],
                &[
                    F::CheckConstraints,
                    F::ChangeDataFeed,
                    F::GeneratedColumns,
                    F::ColumnMapping,
                    F::IdentityColumns,
                ],
            ]
            .concat(),
        ),
        _ => protocol.writer_features().map(<[_]>::to_vec),
    };
    let supported = supported_writer_features();
    let missing: HashSet<TableFeature> = required
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !supported.contains(f))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TransactionError::UnsupportedTableFeatures(
            missing.into_iter().collect(),
        ))
    }
}

/// Whether the table protects its checkpoints (`checkpointProtection`):
/// then inlet does not clean up expired log files.
pub(crate) fn protects_checkpoints(protocol: &Protocol) -> bool {
    protocol.writer_features().is_some_and(|f| {
        f.contains(&TableFeature::Unknown("checkpointProtection".to_owned()))
            || f.iter().any(|f| f.to_string() == "checkpointProtection")
    })
}

/// Refuses a table inlet cannot append to correctly, naming the table, the
/// features and what to do. Operator's fault: it is checked at open.
pub(crate) fn check_writable(
    table: &str,
    protocol: &Protocol,
    metadata: &Metadata,
    schema: &StructType,
) -> Result<(), SinkError> {
    let mut problems = Vec::new();
    match can_write_to(protocol) {
        Ok(()) => {}
        Err(TransactionError::UnsupportedTableFeatures(features)) => {
            let mut names: Vec<String> = features.iter().map(ToString::to_string).collect();
            names.sort();
            problems.push(format!(
                "it requires table features inlet cannot write: {}",
                names.join(", ")
            ));
        }
        Err(TransactionError::TableFeaturesRequired(feature)) => {
            problems.push(format!("it requires the table feature {feature}"));
        }
        Err(e) => problems.push(e.to_string()),
    }
    let mode = metadata.configuration().get(super::mapping::MODE);
    if let Some(mode) =
        mode.filter(|m| !["name", "id", "none"].contains(&m.to_ascii_lowercase().as_str()))
    {
        problems.push(format!(
            "its column mapping mode `{mode}` ({}) is none of name, id, none",
            super::mapping::MODE
        ));
    }
    for field in schema.fields() {
        for (key, what) in FIELD_RULES {
            if field.metadata().contains_key(key) {
                problems.push(format!("column `{}` is {what}", field.name()));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(SinkError::Table {
        table: table.to_string(),
        message: format!(
            "inlet cannot append to this table: {} (protocol {}). Nothing was fetched or written. \
             Fix: point `tables.<name>.uri` (or `quarantine_uri`) at a table without these features (for example a new \
             table inlet creates), or remove the features with the engine that added them where \
             the table allows it (ALTER TABLE ... DROP FEATURE ...)",
            problems.join("; "),
            protocol_summary(protocol)
        ),
    })
}

/// The protocol as the log has it, e.g. `3/7, reader [deletionVectors],
/// writer [deletionVectors, rowTracking]`.
fn protocol_summary(protocol: &Protocol) -> String {
    let json = serde_json::to_value(protocol).unwrap_or_default();
    let list = |key: &str| {
        json.get(key)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    format!(
        "{}/{}, reader features [{}], writer features [{}]",
        json.get("minReaderVersion")
            .unwrap_or(&serde_json::Value::Null),
        json.get("minWriterVersion")
            .unwrap_or(&serde_json::Value::Null),
        list("readerFeatures"),
        list("writerFeatures")
    )
}
