//! Launcher benchmark (harness = false): worker start-up cost and the `--jobs 2` speed-up.
//!
//! `cargo bench --bench launch` prints a table. It runs the real binary on the fixture
//! grid (three learning rates, batch 8, one thread per job) in a temp directory.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn orchestrate(dir: &Path, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_orchestrate"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run orchestrate");
    let took = t.elapsed();
    if !out.status.success() && args[0] == "run" {
        panic!(
            "orchestrate {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(repo.join("data"), dir.path().join("data")).expect("link");
    std::fs::copy(
        repo.join("tests/fixtures/bench.toml"),
        dir.path().join("bench.toml"),
    )
    .expect("copy fixture");

    // Process start-up of a worker up to reading its run directory (which is missing, so
    // it stops there): the launcher's share of spawn-to-first-step.
    let startup = median(
        (0..21)
            .map(|_| {
                let t = Instant::now();
                let _ = Command::new(env!("CARGO_BIN_EXE_orchestrate"))
                    .arg("worker")
                    .env("ORCHESTRATE_RUN_DIR", dir.path().join("no-such-run"))
                    .output();
                t.elapsed()
            })
            .collect(),
    );

    let common = ["--threads", "1", "--quiet"];
    let mut one = vec!["run", "bench.toml", "--runs-dir", "runs-j1", "--jobs", "1"];
    one.extend(common);
    let mut two = vec!["run", "bench.toml", "--runs-dir", "runs-j2", "--jobs", "2"];
    two.extend(common);
    let j1 = orchestrate(dir.path(), &one);
    let j2 = orchestrate(dir.path(), &two);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("launch benchmark ({cores} cores)");
    println!("{:<44} {:>10}", "measure", "value");
    println!(
        "{:<44} {:>7.1} ms",
        "worker process start-up (median of 21)",
        startup.as_secs_f64() * 1e3
    );
    println!(
        "{:<44} {:>8.2} s",
        "3-run grid, batch 8, --jobs 1 --threads 1",
        j1.as_secs_f64()
    );
    println!(
        "{:<44} {:>8.2} s",
        "3-run grid, batch 8, --jobs 2 --threads 1",
        j2.as_secs_f64()
    );
    println!(
        "{:<44} {:>9.2}x",
        "speed-up of --jobs 2",
        j1.as_secs_f64() / j2.as_secs_f64()
    );
}
