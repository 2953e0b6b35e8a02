//! `runtime.json`: what a worker actually runs with, written when it starts.
//!
//! The spec's `train.device` and `train.threads` say what was asked; `--devices`, `--threads`,
//! `auto` and the launcher's attempt count decide what is used, and reach the worker only
//! through its environment. The worker records the outcome here so that the run summary
//! reports the device and threads of the run, not of the spec.

use serde::{Deserialize, Serialize};

use super::RunDir;
use super::files::{StoreError, read_json, write_json};
use crate::device::Device;

/// Contents of `runtime.json`, rewritten by each attempt's worker as it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeRecord {
    /// The device the worker was given (`--devices`, `launch.devices` or `train.device`).
    pub requested_device: Device,
    /// The device it trains on: `auto` resolved, `cuda` as `cuda:0`.
    pub device: Device,
    /// CPU threads its kernels use.
    pub threads: usize,
    /// The attempt this worker is (1 on the first).
    pub attempt: u32,
    /// Version of the orchestrate binary that trains.
    pub orchestrate_version: String,
}

/// Reads `runtime.json`; `None` when no worker has started in this run directory.
pub fn read_runtime(run: &RunDir) -> Result<Option<RuntimeRecord>, StoreError> {
    read_json(&run.runtime())
}

/// Writes `runtime.json` atomically.
pub fn write_runtime(run: &RunDir, record: &RuntimeRecord) -> Result<(), StoreError> {
    write_json(&run.runtime(), record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_devices_spelled_as_in_specs() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path());
        assert_eq!(read_runtime(&run).unwrap(), None);
        let rec = RuntimeRecord {
            requested_device: Device::Auto,
            device: Device::Cuda(Some(1)),
            threads: 4,
            attempt: 2,
            orchestrate_version: "0.1.0".into(),
        };
        write_runtime(&run, &rec).unwrap();
        let text = std::fs::read_to_string(run.runtime()).unwrap();
        assert!(
            text.contains("\"cuda:1\"") && text.contains("\"auto\""),
            "{text}"
        );
        assert_eq!(read_runtime(&run).unwrap(), Some(rec));
    }

    #[test]
    fn a_bad_device_in_the_record_is_corrupt_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path());
        std::fs::write(
            run.runtime(),
            r#"{"requested_device":"gpu","device":"cpu","threads":1,"attempt":1,"orchestrate_version":"x"}"#,
        )
        .unwrap();
        let e = read_runtime(&run).unwrap_err().to_string();
        assert!(e.contains("runtime.json") && e.contains("gpu"), "{e}");
    }
}
