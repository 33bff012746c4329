//! Producing test messages and recording where each landed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// Where a produced message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Landed {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Produces `payloads` (keys spread them over the partitions) and returns
/// where each landed, in order.
pub(crate) fn produce(bootstrap: &str, topic: &str, payloads: &[Vec<u8>]) -> Vec<Landed> {
    let values: Vec<Option<&[u8]>> = payloads.iter().map(|p| Some(p.as_slice())).collect();
    produce_values(bootstrap, topic, &values)
}

/// Like [`produce`], with tombstones (`None`) and values up to 16 MB.
pub(crate) fn produce_values(
    bootstrap: &str,
    topic: &str,
    values: &[Option<&[u8]>],
) -> Vec<Landed> {
    let keys: Vec<Vec<u8>> = (0..values.len())
        .map(|i| format!("k{i}").into_bytes())
        .collect();
    let records: Vec<Record<'_>> = keys
        .iter()
        .zip(values)
        .map(|(k, v)| (Some(k.as_slice()), *v))
        .collect();
    produce_records(bootstrap, topic, &records)
}

/// A record to produce: key and value, `None` to leave one out.
pub(crate) type Record<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Produces (key, value) records; `None` leaves the key or value out.
pub(crate) fn produce_records(bootstrap: &str, topic: &str, records: &[Record<'_>]) -> Vec<Landed> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("message.max.bytes", "16000000")
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let landed = rt.block_on(async {
        let mut futs = Vec::with_capacity(records.len());
        for (k, v) in records {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic);
            if let Some(k) = k {
                record = record.key(*k);
            }
            if let Some(v) = v {
                record = record.payload(*v);
            }
            futs.push(producer.send(record, Duration::from_secs(30)));
        }
        let mut out = Vec::with_capacity(futs.len());
        for f in futs {
            let d = f.await.expect("delivered");
            out.push(Landed {
                partition: d.partition,
                offset: d.offset,
            });
        }
        out
    });
    producer.flush(Duration::from_secs(10)).unwrap();
    landed
}

/// Produces `count` payloads made by `make(id)` in the background at about
/// `rate` per second. Returns the thread, where each landed (in order), and a
/// flag set once all are produced.
pub(crate) fn background_producer(
    bootstrap: String,
    topic: &'static str,
    count: u64,
    rate: u64,
    make: fn(u64) -> Vec<u8>,
) -> (
    std::thread::JoinHandle<()>,
    Arc<Mutex<Vec<Landed>>>,
    Arc<AtomicBool>,
) {
    let landed = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let (l, d) = (landed.clone(), done.clone());
    let handle = std::thread::spawn(move || {
        let per_batch = (rate / 10).max(1);
        let mut id = 0;
        while id < count {
            let n = per_batch.min(count - id);
            let payloads: Vec<Vec<u8>> = (id..id + n).map(make).collect();
            let got = produce(&bootstrap, topic, &payloads);
            l.lock().unwrap().extend(got);
            id += n;
            std::thread::sleep(Duration::from_millis(100));
        }
        d.store(true, Ordering::Release);
    });
    (handle, landed, done)
}

/// A JSON event with a unique id.
pub(crate) fn event(id: u64) -> Vec<u8> {
    format!(
        r#"{{"id":{id},"user":"u{}","action":"click","amount":{}.5,"event_time":"2024-05-01T12:00:00Z"}}"#,
        id % 7,
        id % 100
    )
    .into_bytes()
}
