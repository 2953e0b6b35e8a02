//! Data fingerprints: the SHA-256 of each data file a run reads, cached in the runs directory
//! (`runs/.fingerprints.json`) by the file's size, mtime and inode so that planning a grid of
//! many runs hashes each file once, and a later plan hashes nothing unless a file changed.
//!
//! A cached hash is trusted only while all three of size, mtime and inode are what they were
//! when it was computed: a file replaced in place (new inode, or same inode rewritten with a
//! new mtime) is hashed again. The cache is keyed by absolute path; the fingerprint itself
//! records roles, not paths (see [`crate::data::data_files`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;
use crate::grid::identity::DataFingerprint;
use crate::spec::DataSpec;

/// The cache file's name in the runs directory.
pub const FINGERPRINTS_FILE: &str = ".fingerprints.json";

/// What a cached hash was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    sha256: String,
}

/// The per-file hash cache of one runs directory.
#[derive(Debug, Default)]
pub struct Fingerprints {
    path: PathBuf,
    cache: BTreeMap<String, Entry>,
    /// Paths already checked in this process: a file does not change while one plan is made.
    seen: HashMap<PathBuf, Option<String>>,
    dirty: bool,
    /// Files hashed (not taken from the cache) by this instance; for tests and the bench.
    pub hashed: usize,
}

impl Fingerprints {
    /// The cache of `runs_dir`; an absent or unreadable cache file starts empty (it is only
    /// a cache: every entry is re-checked against the file anyway).
    pub fn open(runs_dir: &Path) -> Self {
        let path = runs_dir.join(FINGERPRINTS_FILE);
        let cache = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Fingerprints {
            path,
            cache,
            ..Default::default()
        }
    }

    /// The fingerprint of the files `spec` names; [`DataFingerprint::Unread`] when any of
    /// them cannot be read.
    pub fn data(&mut self, spec: &DataSpec) -> DataFingerprint {
        let mut files = BTreeMap::new();
        for (role, path) in crate::data::data_files(spec) {
            match self.file(&path) {
                Some(h) => {
                    files.insert(role.to_string(), h);
                }
                None => return DataFingerprint::Unread,
            }
        }
        DataFingerprint::Files(files)
    }

    /// The SHA-256 (hex) of one file, from the cache when its size, mtime and inode match.
    fn file(&mut self, path: &Path) -> Option<String> {
        if let Some(h) = self.seen.get(path) {
            return h.clone();
        }
        let h = self.compute(path);
        self.seen.insert(path.to_path_buf(), h.clone());
        h
    }

    fn compute(&mut self, path: &Path) -> Option<String> {
        let (mut f, _) = crate::data::open_data_file(path).ok()?;
        let meta = f.metadata().ok()?;
        let key = std::path::absolute(path).ok()?.display().to_string();
        let (size, mtime_ns, inode) = (
            meta.len(),
            i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            meta.ino(),
        );
        if let Some(e) = self.cache.get(&key)
            && (e.size, e.mtime_ns, e.inode) == (size, mtime_ns, inode)
        {
            return Some(e.sha256.clone());
        }
        let sha256 = sha256_of(&mut f).ok()?;
        self.hashed += 1;
        self.cache.insert(
            key,
            Entry {
                size,
                mtime_ns,
                inode,
                sha256: sha256.clone(),
            },
        );
        self.dirty = true;
        Some(sha256)
    }

    /// Writes the cache back (atomically) if it changed and the runs directory exists:
    /// making a plan does not create the runs directory.
    pub fn save(&mut self) -> Result<(), StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if !self.dirty || !dir.is_dir() {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(&self.cache).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        super::write_atomic(&self.path, &bytes).map_err(|e| StoreError::io(&self.path, e))?;
        self.dirty = false;
        Ok(())
    }
}

/// The SHA-256 (hex) of a stream, read in blocks: a data file is never held whole.
pub fn sha256_of(r: &mut dyn Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_in(dir: &Path) -> DataSpec {
        let mut d = DataSpec {
            dir: dir.display().to_string(),
            ..DataSpec::default()
        };
        for (i, f) in ["a", "b", "c", "d"].iter().enumerate() {
            std::fs::write(dir.join(f), [i as u8; 10]).unwrap();
        }
        d.train = "a".into();
        d.train_labels = "b".into();
        d.test = "c".into();
        d.test_labels = "d".into();
        d
    }

    #[test]
    fn each_file_is_hashed_once_and_the_cache_survives_a_reopen() {
        let runs = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let spec = images_in(data.path());
        let mut fp = Fingerprints::open(runs.path());
        let first = fp.data(&spec);
        assert!(matches!(&first, DataFingerprint::Files(f) if f.len() == 4));
        assert_eq!(fp.data(&spec), first);
        assert_eq!(fp.hashed, 4);
        fp.save().unwrap();
        let mut again = Fingerprints::open(runs.path());
        assert_eq!(again.data(&spec), first);
        assert_eq!(again.hashed, 0, "a warm cache hashes nothing");
    }

    #[test]
    fn a_replaced_file_is_hashed_again_and_a_missing_one_is_unread() {
        let runs = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let spec = images_in(data.path());
        let mut fp = Fingerprints::open(runs.path());
        let first = fp.data(&spec);
        fp.save().unwrap();
        // Same size, new contents, through a rename: a new inode.
        let tmp = data.path().join("tmp");
        std::fs::write(&tmp, [9u8; 10]).unwrap();
        std::fs::rename(&tmp, data.path().join("a")).unwrap();
        let mut fp = Fingerprints::open(runs.path());
        let second = fp.data(&spec);
        assert_ne!(second, first);
        assert_eq!(fp.hashed, 1);
        std::fs::remove_file(data.path().join("d")).unwrap();
        assert_eq!(
            Fingerprints::open(runs.path()).data(&spec),
            DataFingerprint::Unread
        );
    }

    #[test]
    fn sha256_is_pinned() {
        let h = sha256_of(&mut &b"abc"[..]).unwrap();
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
