//! Device names and thread counts through the real binary: a `--devices` value that names no
//! device is a usage error before anything is written, and a run's summary records the device
//! and threads it trained with (`--devices`, `--threads`, `auto` resolved), not the spec's.

use crate::util::Sandbox;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One CNN run on 200 images, one epoch: a spec whose device and threads the flags override.
fn spec() -> String {
    crate::util::mini_cnn_spec("dev", 200, 1, "device = \"auto\"\nthreads = 2", "")
}

fn only_run_dir(exp: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(exp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("plan.json").is_file())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_devices_flag_naming_no_device_is_a_usage_error_and_writes_nothing() {
    let sb = Sandbox::with_data();
    sb.write("dev.toml", &spec());
    for bad in ["gpu", "cuda:x", "cpu,gpu", "cuda:"] {
        let out = sb.run(&["run", "dev.toml", "--devices", bad]);
        out.expect_code(2)
            .stderr_has("--devices")
            .stderr_has("cuda:N");
        let shown = bad.rsplit(',').next().unwrap();
        out.stderr_has(&format!("'{shown}'"));
        assert!(!sb.path().join("runs").exists(), "runs/ written for {bad}");
    }
}

#[test]
fn the_summary_records_the_threads_and_device_the_run_used() {
    let sb = Sandbox::with_data();
    sb.write("dev.toml", &spec());
    sb.run(&["run", "dev.toml", "--threads", "1", "--devices", "cpu"])
        .ok();
    let run = only_run_dir(&sb.path().join("runs/dev"));
    let env = &json(&run.join("summary.json"))["environment"];
    assert_eq!(env["threads"], 1, "{env}");
    assert_eq!(env["device"], "cpu", "{env}");
    let rt = json(&run.join("runtime.json"));
    assert_eq!(rt["threads"], 1, "{rt}");
    assert_eq!(rt["requested_device"], "cpu", "{rt}");
    assert_eq!(rt["attempt"], 1, "{rt}");
    assert_eq!(rt["orchestrate_version"], env!("CARGO_PKG_VERSION"), "{rt}");
    // The resolved config still says what the spec asked: run IDs do not change.
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("device = \"auto\"") && config.contains("threads = 2"));
}

/// Without flags, `auto` is recorded as what it resolved to (the CPU in a CPU-only build).
#[cfg(not(feature = "cuda"))]
#[test]
fn auto_is_recorded_as_the_device_it_resolved_to() {
    let sb = Sandbox::with_data();
    sb.write("dev.toml", &spec());
    sb.run(&["run", "dev.toml"]).ok();
    let run = only_run_dir(&sb.path().join("runs/dev"));
    let env = &json(&run.join("summary.json"))["environment"];
    assert_eq!(env["device"], "cpu", "{env}");
    assert_eq!(env["threads"], 2, "{env}");
}

/// A well-formed CUDA name in a CPU-only build is a runtime refusal (exit 5), still before
/// anything is written, whether it comes from the flag or from the spec.
#[cfg(not(feature = "cuda"))]
#[test]
fn a_cuda_device_in_a_cpu_only_build_is_refused_before_anything_is_written() {
    let sb = Sandbox::with_data();
    sb.write("dev.toml", &spec());
    for args in [
        &["run", "dev.toml", "--devices", "cuda:1"][..],
        &["run", "dev.toml", "--set", "launch.devices=[\"cuda\"]"][..],
    ] {
        sb.run(args).expect_code(5).stderr_has("--features cuda");
        assert!(
            !sb.path().join("runs").exists(),
            "runs/ written for {args:?}"
        );
    }
}
