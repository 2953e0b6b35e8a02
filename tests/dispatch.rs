//! The launch through the real binary as the dispatcher and the settings stage shape it:
//! flags that do not fit the backend are refused before any data is read, and a local grid's
//! event stream has one start and one verdict per run, then the counts, then the winner.

mod util;

use serde_json::Value;
use util::Sandbox;

/// Two CNN runs on 200 images, one epoch each.
fn grid() -> String {
    util::mini_cnn_spec(
        "disp",
        200,
        1,
        "",
        "[select]\nmetric = \"dev/accuracy\"\nmode = \"max\"\n\n[grid]\n\"optimizer.lr\" = [0.001, 0.003]\n",
    )
}

#[test]
fn flags_that_do_not_fit_the_backend_are_refused_before_the_data_is_read() {
    // No data/ here: a check of the data would fail with the data exit code instead.
    let sb = Sandbox::new();
    sb.write("disp.toml", &grid());
    let cases: [(&[&str], &str); 3] = [
        (&["--detach"], "--detach needs the Slurm backend"),
        (
            &["--backend", "slurm", "--fail-fast"],
            "--fail-fast is not supported with the Slurm backend",
        ),
        (
            &["--backend", "slurm", "--devices", "cpu"],
            "--devices is for local workers",
        ),
    ];
    for (flags, message) in cases {
        let mut args = vec!["run", "disp.toml"];
        args.extend_from_slice(flags);
        sb.run(&args).expect_code(2).stderr_has(message);
        assert!(
            !sb.path().join("runs").exists(),
            "runs/ written for {flags:?}"
        );
    }
}

#[test]
fn a_local_grid_reports_one_start_and_one_verdict_per_run_then_counts_then_the_winner() {
    let sb = Sandbox::with_data();
    sb.write("disp.toml", &grid());
    let out = sb.run(&[
        "run",
        "disp.toml",
        "--json",
        "--jobs",
        "1",
        "--threads",
        "1",
    ]);
    out.ok();
    let events: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"grid_started"), "{kinds:?}");
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["grid_finished", "winner"],
        "{kinds:?}"
    );
    let started = &events[0];
    assert_eq!(
        (started["jobs"].as_u64(), started["to_run"].as_u64()),
        (Some(1), Some(2))
    );
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["event"] == kind).collect() };
    let starts = of("run_started");
    let verdicts = of("run_finished");
    assert_eq!((starts.len(), verdicts.len()), (2, 2), "{kinds:?}");
    for v in &verdicts {
        assert_eq!(
            (v["state"].as_str(), v["attempt"].as_u64()),
            (Some("done"), Some(1))
        );
        assert_eq!(v["retry"], false);
        // Each verdict comes after its run's start.
        let id = &v["run_id"];
        let start_at = events
            .iter()
            .position(|e| e["event"] == "run_started" && &e["run_id"] == id);
        let end_at = events
            .iter()
            .position(|e| e["event"] == "run_finished" && &e["run_id"] == id);
        assert!(start_at < end_at, "{kinds:?}");
    }
    let counts = of("grid_finished")[0];
    assert_eq!(
        (
            counts["done"].as_u64(),
            counts["failed"].as_u64(),
            counts["not_started"].as_u64()
        ),
        (Some(2), Some(0), Some(0))
    );
}
