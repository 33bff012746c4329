//! Creating a table whose properties turn on writer features delta-rs'
//! create cannot commit (in-commit timestamps, row tracking, column mapping,
//! which needs ids and physical names on every column, type widening, V2
//! checkpoints, liquid clustering with its domain): inlet writes
//! its first commit itself, write-if-absent of version 0, with a protocol
//! (writer version 7) listing every feature the properties and the schema
//! use, and the `inCommitTimestamp` of the commit. The feature is on from
//! version 0, so no enablement version or timestamp is set (the protocol
//! asks for them only when the feature is turned on later).

use std::collections::HashMap;

use bytes::Bytes;
use deltalake::kernel::{new_metadata, Action, CommitInfo, Protocol, StructType};
use deltalake::logstore::LogStore;
use deltalake::{DeltaResult, DeltaTableError};

const ICT: &str = "delta.enableInCommitTimestamps";
const ROW_TRACKING: &str = "delta.enableRowTracking";
const TYPE_WIDENING: &str = "delta.enableTypeWidening";
/// A table property that only asks for domain metadata support (as Spark's
/// `delta.feature.<name> = supported`); it is not kept in the metadata.
pub(crate) const DOMAIN_FEATURE: &str = "delta.feature.domainMetadata";
/// The domain holding a clustered table's clustering columns.
pub(crate) const CLUSTERING_DOMAIN: &str = "delta.clustering";

fn is_true<M: Props>(props: &M, key: &str) -> bool {
    props
        .value(key)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// A map of table properties (the config's, or the table's).
pub(crate) trait Props {
    fn value(&self, key: &str) -> Option<&String>;
}

impl Props for HashMap<String, String> {
    fn value(&self, key: &str) -> Option<&String> {
        self.get(key)
    }
}

impl Props for std::collections::BTreeMap<String, String> {
    fn value(&self, key: &str) -> Option<&String> {
        self.get(key)
    }
}

/// Whether the properties turn column mapping on (`name` or `id`).
fn maps_columns<M: Props>(props: &M) -> bool {
    props
        .value(super::mapping::MODE)
        .is_some_and(|m| m.eq_ignore_ascii_case("name") || m.eq_ignore_ascii_case("id"))
}

/// Whether a table with `properties` (clustered by `cluster_by`) is
/// created by inlet's own commit.
pub(crate) fn needs_own_create(properties: &impl Props, cluster_by: &[String]) -> bool {
    !cluster_by.is_empty()
        || properties.value(DOMAIN_FEATURE).is_some()
        || is_true(properties, ICT)
        || is_true(properties, ROW_TRACKING)
        || maps_columns(properties)
        || is_true(properties, TYPE_WIDENING)
        || properties
            .value("delta.checkpointPolicy")
            .is_some_and(|v| v == "v2")
}

/// The protocol of a new table: the features `props` turn on and the
/// schema uses; reader version 3 only when a reader feature is among them.
fn protocol(
    props: &HashMap<String, String>,
    schema: &StructType,
    clustered: bool,
) -> DeltaResult<Protocol> {
    let mut reader: Vec<&str> = Vec::new();
    let mut writer: Vec<&str> = Vec::new();
    let schema_json = serde_json::to_string(schema)?;
    if is_true(props, ICT) {
        writer.push("inCommitTimestamp");
    }
    if is_true(props, ROW_TRACKING) {
        writer.push("rowTracking");
    }
    if is_true(props, ROW_TRACKING) || clustered || props.contains_key(DOMAIN_FEATURE) {
        writer.push("domainMetadata");
    }
    if clustered {
        writer.push("clustering");
    }
    if super::identity::has_identity(schema) {
        writer.push("identityColumns");
    }
    if is_true(props, "delta.appendOnly") {
        writer.push("appendOnly");
    }
    if is_true(props, "delta.enableChangeDataFeed") {
        writer.push("changeDataFeed");
    }
    if props.keys().any(|k| k.starts_with("delta.constraints.")) {
        writer.push("checkConstraints");
    }
    let mut both = |f| {
        reader.push(f);
        writer.push(f);
    };
    if is_true(props, "delta.enableDeletionVectors") {
        both("deletionVectors");
    }
    if maps_columns(props) {
        both("columnMapping");
    }
    if is_true(props, TYPE_WIDENING) {
        both("typeWidening");
    }
    if props
        .get("delta.checkpointPolicy")
        .is_some_and(|v| v == "v2")
    {
        both("v2Checkpoint");
    }
    if schema_json.contains("\"timestamp_ntz\"") {
        both("timestampNtz");
    }
    let value = if reader.is_empty() {
        serde_json::json!({"minReaderVersion": 1, "minWriterVersion": 7, "writerFeatures": writer})
    } else {
        serde_json::json!({
            "minReaderVersion": 3, "minWriterVersion": 7,
            "readerFeatures": reader, "writerFeatures": writer,
        })
    };
    Ok(serde_json::from_value(value)?)
}

/// Writes version 0 of a table of `schema` with `properties`; the caller
/// loads the table afterwards (its own or a concurrent creator's).
pub(crate) async fn create(
    log: &dyn LogStore,
    schema: &StructType,
    partition_by: &[String],
    cluster_by: &[String],
    properties: &[(String, Option<String>)],
) -> DeltaResult<()> {
    let mut props: HashMap<String, String> = properties
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
        .collect();
    if is_true(&props, ROW_TRACKING) {
        // As Spark names them: where a rewrite would materialise row ids.
        let id = uuid::Uuid::new_v4();
        props
            .entry("delta.rowTracking.materializedRowIdColumnName".into())
            .or_insert_with(|| format!("_row-id-col-{id}"));
        props
            .entry("delta.rowTracking.materializedRowCommitVersionColumnName".into())
            .or_insert_with(|| format!("_row-commit-version-col-{id}"));
    }
    let mapped;
    let schema = if maps_columns(&props) {
        // Every column gets an id and a physical name from the start.
        let (s, max_id) = super::mapping::assign(schema, &uuid::Uuid::new_v4().to_string())
            .map_err(DeltaTableError::Generic)?;
        props.insert(super::mapping::MAX_ID.to_string(), max_id.to_string());
        mapped = s;
        &mapped
    } else {
        schema
    };
    let protocol = protocol(&props, schema, !cluster_by.is_empty())?;
    props.remove(DOMAIN_FEATURE);
    let clustering = clustering_domain(schema, cluster_by)?;
    let metadata = new_metadata(schema, partition_by, props.iter())?;
    let now = chrono::Utc::now().timestamp_millis();
    let info = CommitInfo {
        timestamp: Some(now),
        in_commit_timestamp: is_true(&props, ICT).then_some(now),
        operation: Some("CREATE TABLE".into()),
        is_blind_append: Some(true),
        engine_info: Some(format!("inlet/{}", env!("CARGO_PKG_VERSION"))),
        ..Default::default()
    };
    let mut actions = vec![
        Action::CommitInfo(info),
        Action::Protocol(protocol),
        Action::Metadata(metadata),
    ];
    actions.extend(clustering.map(Action::DomainMetadata));
    let lines: Vec<String> = actions
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    let bytes = Bytes::from(lines.join("\n"));
    let operation = uuid::Uuid::new_v4();
    let commit = super::change::staged(log, bytes, operation).await?;
    log.write_commit_entry(0, commit, operation)
        .await
        .map_err(|source| DeltaTableError::Transaction { source })
}

/// The `delta.clustering` domain of a table clustered by `columns`, as
/// Spark writes it: each column as the parts of its physical name.
fn clustering_domain(
    schema: &StructType,
    columns: &[String],
) -> DeltaResult<Option<deltalake::kernel::DomainMetadata>> {
    if columns.is_empty() {
        return Ok(None);
    }
    let physical = columns
        .iter()
        .map(|c| {
            let field = schema.field(c).ok_or_else(|| {
                DeltaTableError::Generic(format!("cluster_by names `{c}`, not a column"))
            })?;
            Ok(vec![match field.metadata().get(super::mapping::PHYSICAL) {
                Some(deltalake::kernel::MetadataValue::String(p)) => p.clone(),
                _ => c.clone(),
            }])
        })
        .collect::<DeltaResult<Vec<Vec<String>>>>()?;
    let configuration = serde_json::json!({
        "clusteringColumns": physical,
        "domainName": CLUSTERING_DOMAIN,
    });
    Ok(Some(deltalake::kernel::DomainMetadata {
        domain: CLUSTERING_DOMAIN.into(),
        configuration: configuration.to_string(),
        removed: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_lists_every_feature_the_table_uses() {
        let schema: StructType = serde_json::from_str(
            r#"{"type":"struct","fields":[{"name":"t","type":"timestamp_ntz","nullable":true,"metadata":{}}]}"#,
        )
        .unwrap();
        let props = HashMap::from([
            (ICT.to_string(), "true".to_string()),
            (ROW_TRACKING.to_string(), "true".to_string()),
            ("delta.appendOnly".to_string(), "true".to_string()),
        ]);
        let p = serde_json::to_value(protocol(&props, &schema, true).unwrap()).unwrap();
        assert_eq!(p["minReaderVersion"], 3);
        assert_eq!(p["minWriterVersion"], 7);
        let writer: Vec<&str> = p["writerFeatures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        for f in [
            "inCommitTimestamp",
            "rowTracking",
            "domainMetadata",
            "appendOnly",
            "timestampNtz",
            "clustering",
        ] {
            assert!(writer.contains(&f), "{f}: {p}");
        }
        assert_eq!(p["readerFeatures"], serde_json::json!(["timestampNtz"]));
        let domains = writer.iter().filter(|f| **f == "domainMetadata").count();
        assert_eq!(domains, 1, "{p}");
    }

    #[test]
    fn the_clustering_domain_names_physical_columns() {
        let schema: StructType = serde_json::from_str(
            r#"{"type":"struct","fields":[
                {"name":"a b","type":"long","nullable":true,"metadata":{"delta.columnMapping.id":1,"delta.columnMapping.physicalName":"col-1"}},
                {"name":"c","type":"string","nullable":true,"metadata":{}}]}"#,
        )
        .unwrap();
        let d = clustering_domain(&schema, &["a b".into(), "c".into()])
            .unwrap()
            .unwrap();
        assert_eq!(d.domain, "delta.clustering");
        let c: serde_json::Value = serde_json::from_str(&d.configuration).unwrap();
        assert_eq!(
            c["clusteringColumns"],
            serde_json::json!([["col-1"], ["c"]])
        );
        assert!(clustering_domain(&schema, &["x".into()]).is_err());
        assert!(clustering_domain(&schema, &[]).unwrap().is_none());
    }
}
