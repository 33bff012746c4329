//! The lakehouse fixtures (`../shared/fixtures/delta`, tables written by
//! Spark and Databricks) and writable copies of them.

use std::path::{Path, PathBuf};

use super::required;

/// The shared fixtures, beside the repository (CI lays `../shared` there);
/// `None` (a failure where every dependency is required) when missing.
pub(crate) fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/delta");
    if dir.is_dir() {
        Some(dir)
    } else {
        assert!(!required(), "missing {}", dir.display());
        None
    }
}

/// Copies fixture `name` into `into` (the fixtures are read-only).
pub(crate) fn copy_fixture(name: &str, into: &Path) -> Option<PathBuf> {
    let from = fixtures()?.join(name);
    assert!(from.is_dir(), "missing fixture {}", from.display());
    let to = into.join(name);
    copy_dir(&from, &to);
    Some(to)
}

/// A writable copy of the directory `from` at `to`.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
            // The copy must be writable even where the fixtures are not.
            let mut perm = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&target, perm).unwrap();
        }
    }
}
