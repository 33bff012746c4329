//! Reading tables as the tests check them: delta-rs for the file list and
//! `txn` versions with the parquet crate for contents, and DuckDB's delta
//! extension as a reader sharing no code with delta-rs.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};

/// What a table holds, read with delta-rs (file list and txn actions from the
/// log) and the parquet crate (file contents).
#[derive(Debug, Default)]
pub(crate) struct TableContents {
    /// (partition, offset) of each row.
    pub coordinates: Vec<(i32, i64)>,
    /// `id` of each row.
    pub ids: Vec<i64>,
    /// Table version.
    pub version: i64,
    /// Number of data files.
    pub files: usize,
}

/// The version, the number of active files, and the record batches of every
/// active file of the table at `path` (file list from delta-rs, contents
/// from the parquet crate).
pub(crate) fn table_batches(path: &Path) -> (i64, usize, Vec<RecordBatch>) {
    table_batches_at(&Location::local(path)).expect("a table")
}

/// Where a table is: a URI and its object store options.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    /// Table URI (local path or `s3://...`).
    pub uri: String,
    /// Object store options.
    pub options: HashMap<String, String>,
}

impl Location {
    /// A local table directory.
    pub(crate) fn local(path: &Path) -> Self {
        Location {
            uri: path.display().to_string(),
            options: HashMap::new(),
        }
    }
}

/// Like [`table_batches`], for any location, reading files through the
/// table's object store; `None` when there is no table.
pub(crate) fn table_batches_at(loc: &Location) -> Option<(i64, usize, Vec<RecordBatch>)> {
    use deltalake::logstore::object_store::ObjectStoreExt as _;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = deltalake::ensure_table_uri(&loc.uri).unwrap();
        let mut table = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .with_storage_options(loc.options.clone())
            .build()
            .unwrap();
        match table.load().await {
            Ok(()) => {}
            Err(deltalake::DeltaTableError::NotATable(_)) => return None,
            Err(e) => panic!("open table {}: {e}", loc.uri),
        }
        let version = table.version().map_or(-1, |v| v as i64);
        let store = table.log_store().object_store(None);
        let paths: Vec<String> = table
            .snapshot()
            .unwrap()
            .log_data()
            .into_iter()
            .map(|f| f.path().to_string())
            .collect();
        let mut batches = Vec::new();
        for p in &paths {
            let path = deltalake::Path::parse(p).unwrap();
            let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .unwrap()
                    .build()
                    .unwrap();
            batches.extend(reader.map(Result::unwrap));
        }
        Some((version, paths.len(), batches))
    })
}

/// Reads the table at `loc` (empty when there is none).
pub(crate) fn read_table_at(loc: &Location) -> TableContents {
    let Some((version, files, batches)) = table_batches_at(loc) else {
        return TableContents {
            version: -1,
            ..Default::default()
        };
    };
    let mut out = TableContents {
        version,
        files,
        ..Default::default()
    };
    for b in &batches {
        collect(b, &mut out);
    }
    out
}

/// Reads the table at `path` with delta-rs.
pub(crate) fn read_table(path: &Path) -> TableContents {
    read_table_at(&Location::local(path))
}

fn collect(batch: &RecordBatch, out: &mut TableContents) {
    let p = batch.column_by_name("_partition").unwrap();
    let o = batch.column_by_name("_offset").unwrap();
    let id = batch.column_by_name("id").unwrap();
    let (p, o, id) = (
        p.as_primitive::<Int32Type>(),
        o.as_primitive::<Int64Type>(),
        id.as_primitive::<Int64Type>(),
    );
    for i in 0..batch.num_rows() {
        out.coordinates.push((p.value(i), o.value(i)));
        if !id.is_null(i) {
            out.ids.push(id.value(i));
        }
    }
}

/// A quarantine row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuarantineRow {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Raw value.
    pub value: Option<Vec<u8>>,
    /// Stage.
    pub stage: String,
    /// Error text.
    pub error: String,
}

/// Reads a quarantine table with delta-rs and the parquet crate (empty when
/// it does not exist).
pub(crate) fn read_quarantine(path: &Path) -> Vec<QuarantineRow> {
    read_quarantine_at(&Location::local(path))
}

/// Reads the quarantine table at `loc` (empty when there is none).
pub(crate) fn read_quarantine_at(loc: &Location) -> Vec<QuarantineRow> {
    let Some((_, _, batches)) = table_batches_at(loc) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for b in batches {
        let topic = b.column_by_name("topic").unwrap().as_string::<i32>();
        let part = b
            .column_by_name("partition")
            .unwrap()
            .as_primitive::<Int32Type>();
        let off = b
            .column_by_name("offset")
            .unwrap()
            .as_primitive::<Int64Type>();
        let value = b.column_by_name("value").unwrap().as_binary::<i32>();
        let stage = b.column_by_name("stage").unwrap().as_string::<i32>();
        let error = b.column_by_name("error").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            out.push(QuarantineRow {
                topic: topic.value(i).to_string(),
                partition: part.value(i),
                offset: off.value(i),
                value: (!value.is_null(i)).then(|| value.value(i).to_vec()),
                stage: stage.value(i).to_string(),
                error: error.value(i).to_string(),
            });
        }
    }
    out
}

/// The txn versions stored in the table for `app_ids`, read with delta-rs.
pub(crate) fn txn_versions(path: &Path, app_ids: &[String]) -> HashMap<String, Option<i64>> {
    txn_versions_at(&Location::local(path), app_ids)
}

/// Like [`txn_versions`], for any location.
pub(crate) fn txn_versions_at(loc: &Location, app_ids: &[String]) -> HashMap<String, Option<i64>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = deltalake::ensure_table_uri(&loc.uri).unwrap();
        let mut table = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .with_storage_options(loc.options.clone())
            .build()
            .unwrap();
        table.load().await.expect("open table");
        let snapshot = table.snapshot().unwrap();
        let mut out = HashMap::new();
        for id in app_ids {
            let v = snapshot
                .transaction_version(table.log_store().as_ref(), id)
                .await
                .unwrap();
            out.insert(id.clone(), v);
        }
        out
    })
}

/// Reads the table with DuckDB's delta extension (a reader sharing no code
/// with delta-rs). `None` when the Python environment is not installed.
pub(crate) fn duckdb_read(
    path: &Path,
    txn_ids: &[String],
    sql: Option<&str>,
) -> Option<serde_json::Value> {
    let python = std::env::var_os("INLET_TEST_PYTHON")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/delta_read.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(path);
    for id in txn_ids {
        cmd.args(["--txn", id]);
    }
    if let Some(sql) = sql {
        cmd.args(["--sql", sql]);
    }
    let out = cmd.output().expect("run delta_read.py");
    assert!(
        out.status.success(),
        "delta_read.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("delta_read.py output is JSON"))
}
