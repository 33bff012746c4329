//! Which tables inlet can append to, decided when a table is opened, before
//! anything is fetched: a table whose protocol needs a writer feature inlet's
//! commit path does not write (row tracking, in-commit timestamps, liquid
//! clustering, identity columns, type widening, ...) would otherwise have
//! every commit refused after the data was read, and be retried as if the
//! object store were at fault.

use deltalake::kernel::transaction::{TransactionError, PROTOCOL};
use deltalake::table::state::DeltaTableState;

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

/// Refuses a table inlet cannot append to correctly, naming the table, the
/// features and what to do. Operator's fault: it is checked at open.
pub(crate) fn check_writable(table: &str, snapshot: &DeltaTableState) -> Result<(), SinkError> {
    let mut problems = Vec::new();
    match PROTOCOL.can_write_to(snapshot) {
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
    let mode = snapshot
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .map(|m| m.to_ascii_lowercase());
    if let Some(mode @ ("name" | "id")) = mode.as_deref() {
        problems.push(format!(
            "it uses column mapping (delta.columnMapping.mode = {mode}): inlet's Parquet writer \
             does not write physical column names yet"
        ));
    }
    for field in snapshot.schema().fields() {
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
            protocol_summary(snapshot)
        ),
    })
}

/// The protocol as the log has it, e.g. `3/7, reader [deletionVectors],
/// writer [deletionVectors, rowTracking]`.
fn protocol_summary(snapshot: &DeltaTableState) -> String {
    let json = serde_json::to_value(snapshot.protocol()).unwrap_or_default();
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
