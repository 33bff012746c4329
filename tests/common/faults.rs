//! A fault-injecting object store for tests that drive inlet's library in
//! this process: table locations `faulty+file:///…` and `faulty+s3://…` go
//! through the real store of the inner scheme, wrapped so that chosen calls
//! fail. A write can take effect and still fail (a lost response), like a
//! PUT whose answer a proxy dropped; or fail before it reaches the store, like
//! a store that is briefly unreachable. Registered only in this test binary:
//! nothing of it is in inlet.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use async_trait::async_trait;
use bytes::Bytes;
use deltalake::logstore::object_store::{
    self, path::Path, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use deltalake::logstore::{
    default_logstore, logstore_factories, object_store_factories, LogStore, LogStoreFactory,
    ObjectStoreFactory, ObjectStoreRef, StorageConfig,
};
use deltalake::{DeltaResult, DeltaTableError};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use url::Url;

/// What a rule does to the calls it picks.
#[derive(Clone)]
pub(crate) enum Fault {
    /// The write takes effect, then the call fails: its answer was lost.
    LoseAnswer,
    /// The write takes effect, its answer is lost, and the client sends it
    /// again, as object_store does after a reset connection: the caller
    /// hears the second answer (a conditional PUT: "already exists").
    LoseAnswerAndRetry,
    /// The call fails without reaching the store.
    Unreachable,
    /// Runs before the call goes through, with the call's full location
    /// (e.g. another writer winning the race for a log version).
    Before(Arc<dyn Fn(&str) + Send + Sync>),
}

/// Which calls a rule looks at.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// PUTs of commit files (`_delta_log/<20 digits>.json`, version 1 on)
    /// of the table at this location (`file:///…` or `s3://bucket/path`).
    Commit(String),
    /// Reads (GET, LIST) of anything under this location prefix.
    Read(String),
}

/// A fault for the `picks`-th calls (from 1) of `target`.
pub(crate) struct Rule {
    target: Target,
    picks: Vec<usize>,
    fault: Fault,
    seen: AtomicUsize,
    fired: AtomicUsize,
}

/// The rules of this process.
static RULES: Mutex<Vec<Arc<Rule>>> = Mutex::new(Vec::new());

/// Adds a rule: `fault` for the calls of `target` numbered `picks` (from 1).
/// Returns it, to ask later how often it fired.
pub(crate) fn inject(target: Target, picks: Range<usize>, fault: Fault) -> Arc<Rule> {
    inject_picks(target, picks.collect(), fault)
}

/// Like [`inject`], for any set of call numbers.
pub(crate) fn inject_picks(target: Target, picks: Vec<usize>, fault: Fault) -> Arc<Rule> {
    register();
    let rule = Arc::new(Rule {
        target,
        picks,
        fault,
        seen: AtomicUsize::new(0),
        fired: AtomicUsize::new(0),
    });
    RULES.lock().unwrap().push(rule.clone());
    rule
}

impl Rule {
    /// How many calls the rule changed.
    pub(crate) fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }

    /// How many calls it looked at.
    pub(crate) fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

/// The `faulty+` location of a table location (a local path or a URL).
pub(crate) fn faulty(location: &str) -> String {
    if location.contains("://") {
        format!("faulty+{location}")
    } else {
        format!("faulty+file://{location}")
    }
}

/// The location a [`Target`] names for a table location.
pub(crate) fn target_location(location: &str) -> String {
    if location.contains("://") {
        location.trim_end_matches('/').to_string()
    } else {
        format!("file://{}", location.trim_end_matches('/'))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Put,
    Read,
}

fn is_commit(full: &str, table: &str) -> bool {
    let Some(name) = full
        .strip_prefix(table)
        .and_then(|rest| rest.strip_prefix("/_delta_log/"))
    else {
        return false;
    };
    name.len() == 25
        && name.ends_with(".json")
        && name[..20].bytes().all(|b| b.is_ascii_digit())
        && &name[..20] != "00000000000000000000"
}

/// The fault for a call, if a rule picks it.
fn pick(op: Op, full: &str) -> Option<Fault> {
    let rules = RULES.lock().unwrap().clone();
    for rule in rules {
        let hit = match (&rule.target, op) {
            (Target::Commit(table), Op::Put) => is_commit(full, table),
            (Target::Read(prefix), Op::Read) => full.starts_with(prefix.as_str()),
            _ => false,
        };
        if !hit {
            continue;
        }
        let n = rule.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if rule.picks.contains(&n) {
            rule.fired.fetch_add(1, Ordering::SeqCst);
            return Some(rule.fault.clone());
        }
    }
    None
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: format!("injected fault: {what}").into(),
    }
}

/// The wrapped store.
#[derive(Debug)]
struct Faulty {
    inner: ObjectStoreRef,
    /// `file://` or `s3://bucket`: with a path, a full location.
    root: String,
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl Faulty {
    fn full(&self, path: &Path) -> String {
        format!("{}/{}", self.root, path)
    }

    fn read_fault(&self, path: &Path) -> object_store::Result<()> {
        match pick(Op::Read, &self.full(path)) {
            Some(Fault::Unreachable) => Err(injected("store unreachable")),
            Some(Fault::Before(f)) => {
                f(&self.full(path));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match pick(Op::Put, &self.full(location)) {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(Fault::Unreachable) => Err(injected("store unreachable")),
            Some(Fault::Before(f)) => {
                f(&self.full(location));
                self.inner.put_opts(location, payload, opts).await
            }
            Some(Fault::LoseAnswer) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected("connection reset after the write"))
            }
            Some(Fault::LoseAnswerAndRetry) => {
                let again = (payload.clone(), opts.clone());
                self.inner.put_opts(location, payload, opts).await?;
                let second = self.inner.put_opts(location, again.0, again.1).await;
                assert!(
                    matches!(second, Err(object_store::Error::AlreadyExists { .. })),
                    "the retried conditional PUT must hear that the object exists"
                );
                second
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.read_fault(location)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.read_fault(location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let at = prefix.cloned().unwrap_or_default();
        if let Err(e) = self.read_fault(&at) {
            return stream::once(async move { Err(e) }).boxed();
        }
        sorted(self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let at = prefix.cloned().unwrap_or_default();
        if let Err(e) = self.read_fault(&at) {
            return stream::once(async move { Err(e) }).boxed();
        }
        sorted(self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.read_fault(&prefix.cloned().unwrap_or_default())?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// The listing in path order. The kernel sorts only `file://` listings
/// itself and takes other schemes' (S3's) as ordered; the local store's are
/// not.
fn sorted(
    listing: BoxStream<'static, object_store::Result<ObjectMeta>>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    stream::once(async move {
        let mut all: Vec<ObjectMeta> = listing.try_collect().await?;
        all.sort_by(|a, b| a.location.cmp(&b.location));
        Ok::<_, object_store::Error>(stream::iter(all.into_iter().map(Ok)))
    })
    .try_flatten()
    .boxed()
}

/// The location without `faulty+`.
fn inner_url(url: &Url) -> DeltaResult<Url> {
    let s = url.as_str();
    let inner = s
        .strip_prefix("faulty+")
        .ok_or_else(|| DeltaTableError::InvalidTableLocation(s.to_string()))?;
    Url::parse(inner).map_err(|_| DeltaTableError::InvalidTableLocation(s.to_string()))
}

struct Stores;

impl ObjectStoreFactory for Stores {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let inner = inner_url(url)?;
        let scheme = Url::parse(&format!("{}://", inner.scheme())).unwrap();
        let factory = object_store_factories()
            .get(&scheme)
            .map(|f| f.value().clone())
            .ok_or_else(|| DeltaTableError::InvalidTableLocation(inner.to_string()))?;
        let (store, path) = factory.parse_url_opts(&inner, config)?;
        let root = match inner.host_str() {
            Some(host) if !host.is_empty() => format!("{}://{host}", inner.scheme()),
            _ => format!("{}://", inner.scheme()),
        };
        Ok((Arc::new(Faulty { inner: store, root }), path))
    }
}

struct LogStores;

impl LogStoreFactory for LogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers the `faulty+file` and `faulty+s3` schemes with delta-rs.
pub(crate) fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        inlet::sink::storage::register();
        for scheme in ["faulty+file://", "faulty+s3://"] {
            let url = Url::parse(scheme).unwrap();
            object_store_factories().insert(url.clone(), Arc::new(Stores));
            logstore_factories().insert(url, Arc::new(LogStores));
        }
    });
}

#[test]
fn commit_files_are_told_from_other_files() {
    let t = "file:///tmp/x/events";
    assert!(is_commit(
        "file:///tmp/x/events/_delta_log/00000000000000000003.json",
        t
    ));
    assert!(!is_commit(
        "file:///tmp/x/events/_delta_log/00000000000000000000.json",
        t
    ));
    assert!(!is_commit(
        "file:///tmp/x/events_quarantine/_delta_log/00000000000000000003.json",
        t
    ));
    assert!(!is_commit(
        "file:///tmp/x/events/_delta_log/00000000000000000010.checkpoint.parquet",
        t
    ));
    assert!(!is_commit(
        "file:///tmp/x/events/_delta_log/_last_checkpoint",
        t
    ));
    assert_eq!(faulty("/tmp/x"), "faulty+file:///tmp/x");
    assert_eq!(faulty("s3://b/events"), "faulty+s3://b/events");
}
