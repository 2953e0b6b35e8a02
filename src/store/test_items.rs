//! `test_items.json`: each test item's result, written when a run tests, so that `diff
//! --paired` can resample the test set instead of comparing two means.
//!
//! The file names the tested set by a digest of its items (inputs and gold answers, in order)
//! and their count: two runs are comparable item by item only when both agree. Runs tested
//! before this file existed simply have none; nothing about their identity changes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::RunDir;
use super::files::{StoreError, read_json, write_json};

/// The file's name in the run directory.
pub const TEST_ITEMS_FILE: &str = "test_items.json";

/// Contents of `test_items.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestItems {
    /// The epoch whose weights were tested (the summary's `test_epoch`).
    pub epoch: usize,
    /// Test items evaluated.
    pub count: usize,
    /// SHA-256 (hex) of the tested items' inputs and gold answers in order
    /// ([`test_set_digest`]).
    pub test_set: String,
    /// Per-item values of every test metric that is the mean over items, by tag
    /// (`test/error_rate`: each sentence's error; `test/accuracy`: 1 correct, 0 not).
    pub metrics: BTreeMap<String, Vec<f64>>,
}

/// The digest [`TestItems::test_set`] holds: SHA-256 of `bytes`, the test items serialised by
/// their task in order.
pub fn test_set_digest(bytes: &[u8]) -> String {
    // Reading from memory cannot fail.
    super::fingerprints::sha256_of(&mut &bytes[..]).unwrap_or_default()
}

/// Reads `test_items.json`; `None` when the run has none (untested, or tested before the
/// file existed).
pub fn read_test_items(run: &RunDir) -> Result<Option<TestItems>, StoreError> {
    read_json(&run.test_items())
}

/// Writes `test_items.json` atomically.
pub fn write_test_items(run: &RunDir, items: &TestItems) -> Result<(), StoreError> {
    write_json(&run.test_items(), items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_items_round_trip_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path());
        assert_eq!(read_test_items(&run).unwrap(), None);
        let items = TestItems {
            epoch: 3,
            count: 2,
            test_set: test_set_digest(b"a\tb\n"),
            metrics: [("test/error_rate".to_string(), vec![0.1 + 0.2, 1.0 / 3.0])].into(),
        };
        write_test_items(&run, &items).unwrap();
        assert_eq!(read_test_items(&run).unwrap(), Some(items));
        std::fs::write(run.test_items(), "{").unwrap();
        let e = read_test_items(&run).unwrap_err().to_string();
        assert!(e.contains(TEST_ITEMS_FILE), "{e}");
    }

    #[test]
    fn the_digest_is_sha256_of_the_bytes() {
        // `printf 'abc' | sha256sum`
        assert_eq!(
            test_set_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
