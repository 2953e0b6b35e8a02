//! Planning speed: `grid::expand` (checks, canonical ids, names) on grids of growing size,
//! and `spec::load` of a shipped experiment. Planning 10,000 runs must take well under a
//! second, also with every run's data fingerprint from a warm cache (`runs/.fingerprints.json`
//! as a later `plan` finds it); the first (cold) fingerprint of the shipped data is timed too.
//!
//! Run with `cargo bench --bench plan` (release build), or `cargo bench --bench plan
//! --profile dev` to reuse the dev build, which is the slower, pessimistic figure. Plain
//! `fn main` with `Instant`: each size is timed over several repetitions and the fastest is
//! reported, the least noisy figure on a shared machine.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use orchestrate::grid;
use orchestrate::spec::{GridSpec, Spec};
use orchestrate::store::Fingerprints;

/// A spec whose grid is `lrs x batch sizes` runs.
fn spec_of(lrs: usize, batches: usize) -> Spec {
    let mut axes = BTreeMap::new();
    axes.insert(
        "optimizer.lr".to_string(),
        (1..=lrs)
            .map(|i| toml::Value::Float(i as f64 * 1e-5))
            .collect(),
    );
    axes.insert(
        "train.batch_size".to_string(),
        (1..=batches as i64).map(toml::Value::Integer).collect(),
    );
    let mut spec = Spec {
        name: "bench".into(),
        grid: GridSpec {
            axes,
            ..GridSpec::default()
        },
        ..Spec::default()
    };
    spec.launch.max_runs = 100_000;
    spec
}

fn fastest(reps: usize, mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut n = 0;
    for _ in 0..reps {
        let t = Instant::now();
        n = f();
        best = best.min(t.elapsed());
    }
    (best, n)
}

fn main() {
    println!(
        "{:<28} {:>8} {:>12} {:>12}",
        "case", "runs", "time (ms)", "per run (us)"
    );
    for (lrs, batches) in [(10, 10), (10, 100), (100, 100), (100, 500)] {
        let spec = spec_of(lrs, batches);
        let (t, n) = fastest(5, || match grid::expand(&spec) {
            Ok(runs) => runs.len(),
            Err(e) => panic!("bench grid is valid: {e}"),
        });
        let ms = t.as_secs_f64() * 1e3;
        println!(
            "{:<28} {:>8} {:>12.1} {:>12.2}",
            format!("grid::expand {lrs}x{batches}"),
            n,
            ms,
            ms * 1e3 / n as f64
        );
    }
    // Data fingerprints on the shipped mini data set, as `plan` computes them.
    let data_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/fashion-mnist-mini");
    let runs_dir = std::env::temp_dir().join(format!("plan-bench-{}", std::process::id()));
    std::fs::create_dir_all(&runs_dir).unwrap();
    let mut cold_spec = spec_of(1, 1);
    cold_spec.data.dir = data_dir.into();
    let t = Instant::now();
    let mut fp = Fingerprints::open(&runs_dir);
    grid::expand_with(&cold_spec, &mut |d| fp.data(d)).unwrap();
    fp.save().unwrap();
    println!(
        "{:<28} {:>8} {:>12.2} {:>12}",
        format!("cold fingerprint ({} files)", fp.hashed),
        1,
        t.elapsed().as_secs_f64() * 1e3,
        "-"
    );
    // The full Fashion-MNIST set (`apt-get install dataset-fashion-mnist`), when installed:
    // its first fingerprint, against `sha256sum` of the same files in the same run.
    let full = "/usr/share/datasets/fashion-mnist";
    if Path::new(full).is_dir() {
        let mut spec = spec_of(1, 1);
        spec.data.dir = full.into();
        let (t, hashed) = fastest(5, || {
            let mut fp = Fingerprints::open(&std::env::temp_dir().join("plan-bench-no-cache"));
            grid::expand_with(&spec, &mut |d| fp.data(d)).unwrap();
            fp.hashed
        });
        let files: Vec<_> = std::fs::read_dir(full)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let (peer, _) = fastest(5, || {
            std::process::Command::new("sha256sum")
                .args(&files)
                .output()
                .map_or(0, |o| o.stdout.len())
        });
        println!(
            "{:<28} {:>8} {:>12.2} {:>12}",
            format!("cold fp, full set ({hashed} files)"),
            1,
            t.as_secs_f64() * 1e3,
            format!("sha256sum {:.1}", peer.as_secs_f64() * 1e3)
        );
    }
    for data_axis in [false, true] {
        let mut spec = spec_of(100, 100);
        spec.data.dir = data_dir.into();
        if data_axis {
            // A grid that changes `data` asks for a fingerprint per run: memoised per file.
            let b = spec.grid.axes.remove("train.batch_size").unwrap();
            spec.grid.axes.insert(
                "data.train_limit".into(),
                (1..=b.len() as i64).map(toml::Value::Integer).collect(),
            );
        }
        let (t, n) = fastest(5, || {
            // A fresh cache object each time: what a new `plan` process reads.
            let mut fp = Fingerprints::open(&runs_dir);
            let runs = grid::expand_with(&spec, &mut |d| fp.data(d)).unwrap();
            assert_eq!(fp.hashed, 0, "the cache is warm");
            runs.len()
        });
        let ms = t.as_secs_f64() * 1e3;
        println!(
            "{:<28} {:>8} {:>12.1} {:>12.2}",
            if data_axis {
                "warm fp, data axis 100x100"
            } else {
                "warm fingerprints 100x100"
            },
            n,
            ms,
            ms * 1e3 / n as f64
        );
    }
    let _ = std::fs::remove_dir_all(&runs_dir);
    let q2 = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/q2_grid.toml"
    ));
    let (t, n) = fastest(20, || match grid::load_runs(q2, &[]) {
        Ok((_, runs)) => runs.len(),
        Err(e) => panic!("q2_grid loads: {e}"),
    });
    println!(
        "{:<28} {:>8} {:>12.2} {:>12}",
        "load + expand q2_grid.toml",
        n,
        t.as_secs_f64() * 1e3,
        "-"
    );
}
