//! The upsert bench (issue 11), at the sink: a table of `--keys` rows (one
//! per key), then `--batches` batches that each change `--changed` (a
//! fraction) of the keys, uniformly scattered, merged with
//! `DeltaSink::commit_merge`; the same change batches appended with
//! `DeltaSink::commit` to a second table, in the same run, for the ratio.
//! No Kafka: decoding and fetching cost the same in both modes, and the
//! end-to-end bench measures them.
//!
//! Reported: changes/s merged and appended, their ratio, write amplification
//! (bytes of the files each merge adds / bytes of the changes as JSON
//! messages), files rewritten per batch, and the process's peak RSS.
//!
//! With `--deletion-vectors` the upsert table has `delta.enableDeletionVectors`
//! (merges delete replaced rows with a vector instead of rewriting files);
//! its written bytes count the new data files and the vector files.
//!
//! `--deletes F` makes a fraction of each batch's changes deletes. With
//! `--tombstone-retention D` a third table, an upsert table with
//! `tombstone_retention = D`, merges the same batches in the same run: its
//! rate, its ratio to the upsert table's, the median merge time of the
//! first and last quarter of the batches for both (kept deletes must not
//! make a merge slower as they accumulate), and the bytes of its kept
//! deletes.
//!
//! ```text
//! cargo bench --bench upsert -- [--keys 1000000] [--changed 0.01] [--batches 5]
//!     [--file-size 32MiB] [--deletion-vectors] [--deletes 0.1]
//!     [--tombstone-retention 7d]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use inlet::config::CommitConfig;
use inlet::sink::{txn_app_id, DeltaSink, PartitionProgress, DELETE_COLUMN, OFFSET_COLUMN};

struct Args {
    keys: i64,
    changed: f64,
    batches: usize,
    file_size: String,
    deletion_vectors: bool,
    deletes: f64,
    tombstone_retention: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        keys: 1_000_000,
        changed: 0.01,
        batches: 5,
        file_size: "32MiB".into(),
        deletion_vectors: false,
        deletes: 0.0,
        tombstone_retention: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--keys" => a.keys = v().parse().unwrap(),
            "--changed" => a.changed = v().parse().unwrap(),
            "--batches" => a.batches = v().parse().unwrap(),
            "--file-size" => a.file_size = v(),
            "--deletion-vectors" => a.deletion_vectors = true,
            "--deletes" => a.deletes = v().parse().unwrap(),
            "--tombstone-retention" => a.tombstone_retention = Some(v()),
            // `cargo bench` passes --bench.
            _ => {}
        }
    }
    a
}

fn table_config(
    path: &std::path::Path,
    mode: &str,
    file_size: &str,
    vectors: bool,
    retention: Option<&str>,
) -> inlet::config::TableConfig {
    let mut keys = if mode == "upsert" {
        "keys = [\"id\"]\nsequence_by = \"seq\"".to_string()
    } else {
        String::new()
    };
    if let Some(r) = retention {
        keys.push_str(&format!("\ntombstone_retention = \"{r}\""));
    }
    if vectors {
        keys.push_str("\n[tables.t.properties]\n\"delta.enableDeletionVectors\" = \"true\"");
    }
    let toml = format!(
        r#"
[kafka]
bootstrap_servers = "127.0.0.1:9"
group_id = "upsert"
[sources.s]
topics = ["changes"]
table = "t"
[tables.t]
uri = "{}"
schema = "id BIGINT, name STRING, amount DOUBLE, seq BIGINT"
mode = "{mode}"
target_file_size = "{file_size}"
{keys}
"#,
        path.display()
    );
    inlet::pipeline::load_config_str(&toml).unwrap().tables["t"].clone()
}

/// The value columns of rows `ids` at sequence `seq`.
fn rows(ids: &[i64], seq: i64) -> (Vec<Arc<dyn arrow::array::Array>>, u64) {
    let names: Vec<String> = ids.iter().map(|i| format!("customer-{i:09}")).collect();
    let json_bytes: u64 = ids
        .iter()
        .zip(&names)
        .map(|(i, n)| {
            format!(r#"{{"id":{i},"name":"{n}","amount":{i}.25,"seq":{seq}}}"#).len() as u64
        })
        .sum();
    (
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(names)),
            Arc::new(arrow::array::Float64Array::from_iter_values(
                ids.iter().map(|i| *i as f64 + 0.25),
            )),
            Arc::new(Int64Array::from(vec![seq; ids.len()])),
        ],
        json_bytes,
    )
}

fn value_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("seq", DataType::Int64, true),
    ]))
}

fn change_batch(ids: &[i64], deletes: &[bool], seq: i64, first_offset: i64) -> (RecordBatch, u64) {
    let (mut cols, bytes) = rows(ids, seq);
    let mut fields: Vec<Field> = value_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(OFFSET_COLUMN, DataType::Int64, false));
    fields.push(Field::new(DELETE_COLUMN, DataType::Boolean, false));
    cols.push(Arc::new(Int64Array::from_iter_values(
        first_offset..first_offset + ids.len() as i64,
    )));
    cols.push(Arc::new(BooleanArray::from(deletes.to_vec())));
    (
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap(),
        bytes,
    )
}

async fn append(sink: &mut DeltaSink, ids: &[i64], seq: i64, first: i64) -> i64 {
    let schema = value_schema();
    let (cols, _) = rows(ids, seq);
    let mut writer = sink.writer().unwrap();
    writer
        .write(RecordBatch::try_new(schema.clone(), cols).unwrap())
        .await
        .unwrap();
    let adds = writer.flush().await.unwrap();
    let written: i64 = adds.iter().map(|a| a.size).sum();
    let progress = [PartitionProgress {
        app_id: txn_app_id("bench", "changes", 0),
        first,
        last: first + ids.len() as i64 - 1,
    }];
    sink.commit(adds, &schema, &progress, 1, &CommitConfig::default())
        .await
        .unwrap();
    written
}

/// Bytes of the files written by the table's last commit (new data files,
/// and the deletion vector files its adds point to; a file added again
/// with a vector was not written), and the files it removed without
/// adding them again (rewritten), and the files given a vector.
fn last_commit(path: &std::path::Path) -> (i64, usize, usize) {
    let log = path.join("_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    commits.sort();
    let text = std::fs::read_to_string(commits.last().unwrap()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let removed_paths: std::collections::HashSet<&str> = lines
        .iter()
        .filter_map(|v| v["remove"]["path"].as_str())
        .collect();
    let added_paths: std::collections::HashSet<&str> = lines
        .iter()
        .filter_map(|v| v["add"]["path"].as_str())
        .collect();
    let mut added = 0;
    let mut vector_files = std::collections::HashSet::new();
    let mut with_vector = 0;
    for v in &lines {
        let Some(a) = v.get("add") else { continue };
        if removed_paths.contains(a["path"].as_str().unwrap()) {
            vector_files.insert(a["deletionVector"]["pathOrInlineDv"].to_string());
            with_vector += 1;
        } else {
            added += a["size"].as_i64().unwrap();
        }
    }
    let dir = std::fs::read_dir(path).unwrap();
    let dv_bytes: i64 = if vector_files.is_empty() {
        0
    } else {
        // One vector file per merge: the newest.
        dir.filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("deletion_vector_")
            })
            .max_by_key(|e| e.metadata().unwrap().modified().unwrap())
            .map_or(0, |e| e.metadata().unwrap().len() as i64)
    };
    let rewritten = removed_paths.difference(&added_paths).count();
    (added + dv_bytes, rewritten, with_vector)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Median merge time of the first and the last quarter of `times`.
fn quarters(times: &[Duration]) -> (Duration, Duration) {
    let q = (times.len() / 4).max(1);
    (
        median(times[..q].to_vec()),
        median(times[times.len() - q..].to_vec()),
    )
}

/// Bytes of the files under `dir` (none: 0).
fn dir_bytes(dir: &std::path::Path) -> (u64, usize) {
    std::fs::read_dir(dir).map_or((0, 0), |d| {
        d.filter_map(|e| e.ok()?.metadata().ok())
            .fold((0, 0), |(b, n), m| (b + m.len(), n + 1))
    })
}

/// Loads every key once, in key order (files hold key ranges, the best
/// case for pruning), as appends.
async fn load(sink: &mut DeltaSink, keys: i64) -> i64 {
    let mut offset = 0i64;
    let ids: Vec<i64> = (0..keys).collect();
    for chunk in ids.chunks(200_000) {
        append(sink, chunk, 0, offset).await;
        offset += chunk.len() as i64;
    }
    offset
}

async fn merge(sink: &mut DeltaSink, batch: RecordBatch, first: i64, rows: usize) -> Duration {
    let progress = [PartitionProgress {
        app_id: txn_app_id("bench", "changes", 0),
        first,
        last: first + rows as i64 - 1,
    }];
    let t = Instant::now();
    sink.commit_merge(&[batch], &progress, 1, &CommitConfig::default())
        .await
        .unwrap();
    t.elapsed()
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let up_path = dir.path().join("upsert");
        let ap_path = dir.path().join("append");
        let kept_path = dir.path().join("kept");
        let mut up = DeltaSink::open(
            "t",
            &table_config(&up_path, "upsert", &a.file_size, a.deletion_vectors, None),
        )
        .await
        .unwrap();
        let mut ap = DeltaSink::open("t", &table_config(&ap_path, "append", &a.file_size, false, None))
            .await
            .unwrap();
        let mut kept = match &a.tombstone_retention {
            Some(r) => Some(
                DeltaSink::open(
                    "t",
                    &table_config(&kept_path, "upsert", &a.file_size, a.deletion_vectors, Some(r)),
                )
                .await
                .unwrap(),
            ),
            None => None,
        };
        let loaded = Instant::now();
        let mut offset = load(&mut up, a.keys).await;
        if let Some(k) = kept.as_mut() {
            load(k, a.keys).await;
        }
        eprintln!(
            "loaded {} keys in {:.1?} ({} files of ~{})",
            a.keys,
            loaded.elapsed(),
            std::fs::read_dir(&up_path)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "parquet"))
                .count(),
            a.file_size
        );
        let per_batch = ((a.keys as f64) * a.changed).max(1.0) as usize;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut merge_times, mut kept_times) = (Vec::new(), Vec::new());
        let mut append_time = Duration::ZERO;
        let (mut ingested, mut written, mut rewritten) = (0u64, 0i64, 0usize);
        let mut vectors = 0usize;
        let mut ap_offset = 0;
        for b in 0..a.batches {
            let ids: Vec<i64> = (0..per_batch)
                .map(|_| (next() % a.keys as u64) as i64)
                .collect();
            let deletes: Vec<bool> = (0..per_batch)
                .map(|_| (next() % 1_000_000) as f64 / 1e6 < a.deletes)
                .collect();
            let (batch, bytes) = change_batch(&ids, &deletes, b as i64 + 1, offset);
            // The two upsert tables take turns going first (a warm cache).
            let mut took = Duration::ZERO;
            for turn in 0..2 {
                if (turn + b) % 2 == 1 {
                    took = merge(&mut up, batch.clone(), offset, ids.len()).await;
                } else if let Some(k) = kept.as_mut() {
                    kept_times.push(merge(k, batch.clone(), offset, ids.len()).await);
                }
            }
            merge_times.push(took);
            let (added, removed, with_vector) = last_commit(&up_path);
            vectors += with_vector;
            ingested += bytes;
            written += added;
            rewritten += removed;
            offset += ids.len() as i64;
            let t = Instant::now();
            append(&mut ap, &ids, b as i64 + 1, ap_offset).await;
            append_time += t.elapsed();
            ap_offset += ids.len() as i64;
            eprintln!(
                "batch {b}: {} changes, merge {took:.2?}{}, {removed} files rewritten, {with_vector} given a vector, {:.2} MiB written",
                ids.len(),
                kept_times
                    .last()
                    .map_or(String::new(), |t| format!(" (keeping deletes {t:.2?})")),
                added as f64 / (1 << 20) as f64
            );
        }
        let changes = (per_batch * a.batches) as f64;
        let merge_time: Duration = merge_times.iter().sum();
        let merge_rate = changes / merge_time.as_secs_f64();
        let append_rate = changes / append_time.as_secs_f64();
        println!(
            "upsert bench: {} keys, {} batches of {} changes ({}% of keys, {}% of them deletes){}",
            a.keys,
            a.batches,
            per_batch,
            a.changed * 100.0,
            a.deletes * 100.0,
            if a.deletion_vectors { ", deletion vectors" } else { "" }
        );
        println!("  merge:  {merge_rate:.0} changes/s");
        println!("  append: {append_rate:.0} changes/s (same batches)");
        println!("  ratio merge/append: {:.3}", merge_rate / append_rate);
        println!(
            "  write amplification: {:.1} (bytes written {} / bytes ingested as JSON {})",
            written as f64 / ingested as f64,
            written,
            ingested
        );
        println!(
            "  files rewritten per batch: {:.1}",
            rewritten as f64 / a.batches as f64
        );
        println!(
            "  files given a deletion vector per batch: {:.1}",
            vectors as f64 / a.batches as f64
        );
        if let Some(r) = &a.tombstone_retention {
            let kept_time: Duration = kept_times.iter().sum();
            let kept_rate = changes / kept_time.as_secs_f64();
            let (first, last) = quarters(&kept_times);
            let (up_first, up_last) = quarters(&merge_times);
            let (bytes, files) = dir_bytes(&kept_path.join("_inlet_tombstones"));
            println!("  keeping deletes ({r}): {kept_rate:.0} changes/s");
            println!("  ratio keeping/not keeping: {:.3}", kept_rate / merge_rate);
            println!(
                "  median merge, first and last quarter: keeping {first:.2?} → {last:.2?}, not keeping {up_first:.2?} → {up_last:.2?}"
            );
            println!("  kept deletes on disk: {bytes} bytes in {files} files");
        }
        println!("  peak RSS: {:.0} MiB", peak_rss_mib());
    });
}
