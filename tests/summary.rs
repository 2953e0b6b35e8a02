//! Summaries, selection, `best`, `report` and `ls` on run directories written by hand.

mod util;

use orchestrate::spec::{SelectSpec, Spec};
use orchestrate::store::RunState;
use orchestrate::summary::{self, summarize_experiment};
use util::Sandbox;
use util::runs::{lr_grid, lr_run, lr_spec, seq2seq_grid, write_run};

#[test]
fn the_middle_learning_rate_wins_and_summaries_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let exp = lr_grid(&dir.path().join("runs"), "lr");
    let s = summarize_experiment(&exp, &SelectSpec::default()).unwrap();

    assert_eq!(
        s.winner_line(),
        "best: adam-lr0.0005 (01a0b1c2d3e4) dev/accuracy=0.8712 test/accuracy=0.8650 test_epoch=3"
    );
    let order: Vec<&str> = s.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(order, ["adam-lr0.0005", "adam-lr0.001", "adam-lr0.00001"]);
    assert_eq!(s.excluded.len(), 1);
    assert_eq!(s.excluded[0].state, Some(RunState::Diverged));
    assert_eq!(
        s.excluded[0].reason.as_deref(),
        Some("diverged: train/loss is NaN at epoch 2")
    );

    for file in ["summary.json", "summary.md"] {
        assert!(exp.join(file).is_file(), "{file} missing");
    }
    for r in s.all_runs() {
        let text = std::fs::read_to_string(exp.join(&r.id).join("summary.json")).unwrap();
        let run: summary::RunSummary = serde_json::from_str(&text).unwrap();
        assert_eq!(run.run.id, r.id);
        assert_eq!(run.environment.candle_version, "0.11.1");
        assert_eq!(
            run.environment.numerics_version,
            // The fixture runs are the CNN's.
            orchestrate::grid::identity::numerics_version(orchestrate::spec::ModelKind::Cnn)
        );
        assert_eq!(
            run.environment.orchestrate_version,
            env!("CARGO_PKG_VERSION")
        );
    }
    // The experiment summary reads back to what was returned.
    let text = std::fs::read_to_string(exp.join("summary.json")).unwrap();
    let back: summary::ExperimentSummary = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);

    insta::assert_snapshot!(
        "lr_summary_md",
        std::fs::read_to_string(exp.join("summary.md")).unwrap()
    );
}

/// The text of the `"metrics"` section of a pretty-printed run summary.
fn metrics_section(text: &str) -> &str {
    let start = text.find("\n  \"metrics\":").expect("metrics section");
    let end = text.find("\n  \"timings\":").expect("timings section");
    &text[start..end]
}

#[test]
fn identical_runs_have_byte_identical_metric_sections() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let mut a = lr_run("twins", 0, 5e-4, &[0.1 + 0.2, 1.0 / 3.0, 0.8712], 0.865);
    let mut b = lr_run("twins", 1, 5e-4, &[0.1 + 0.2, 1.0 / 3.0, 0.8712], 0.865);
    a.epoch_seconds = 1.25;
    b.epoch_seconds = 7.5;
    b.id = "ffffffffffff".into();
    write_run(&runs.join("twins"), &a);
    write_run(&runs.join("twins"), &b);
    summarize_experiment(&runs.join("twins"), &SelectSpec::default()).unwrap();

    let ta = std::fs::read_to_string(runs.join("twins").join(&a.id).join("summary.json")).unwrap();
    let tb = std::fs::read_to_string(runs.join("twins").join(&b.id).join("summary.json")).unwrap();
    assert_eq!(metrics_section(&ta), metrics_section(&tb));
    assert!(metrics_section(&ta).contains("0.30000000000000004"));
    assert!(
        !metrics_section(&ta).contains("time/"),
        "timings leaked into metrics"
    );
    assert!(ta.contains("\"time/epoch_seconds\": 1.25"));
    assert!(tb.contains("\"time/epoch_seconds\": 7.5"));
}

#[test]
fn a_nan_metric_is_kept_as_the_string_nan() {
    let dir = tempfile::tempdir().unwrap();
    let exp = lr_grid(&dir.path().join("runs"), "lr");
    summarize_experiment(&exp, &SelectSpec::default()).unwrap();
    let text = std::fs::read_to_string(exp.join("03a0b1c2d3e4").join("summary.json")).unwrap();
    assert!(text.contains("\"dev/accuracy\": \"NaN\""), "{text}");
    let run: summary::RunSummary = serde_json::from_str(&text).unwrap();
    assert_eq!(run.metrics.best_epoch, Some(1));
}

#[test]
fn ties_go_to_the_lower_grid_index_whatever_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("runs").join("tie");
    let mut first = lr_run("tie", 0, 1e-3, &[0.5, 0.9], 0.8);
    first.id = "zzzzzzzzzzzz".into();
    let mut second = lr_run("tie", 1, 5e-4, &[0.9, 0.7], 0.85);
    second.id = "aaaaaaaaaaaa".into();
    write_run(&exp, &first);
    write_run(&exp, &second);
    let s = summarize_experiment(&exp, &SelectSpec::default()).unwrap();
    assert_eq!(s.winner.as_deref(), Some("zzzzzzzzzzzz"));
    assert_eq!(s.runs[1].id, "aaaaaaaaaaaa");
    assert_eq!(s.runs[1].metrics.best_epoch, Some(1));
}

#[test]
fn failed_cancelled_and_unstarted_runs_never_win() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("runs").join("mixed");
    let mut failed = lr_run("mixed", 0, 1e-3, &[0.99], 0.99);
    failed.state = Some(RunState::Failed);
    let mut cancelled = lr_run("mixed", 1, 2e-3, &[0.98], 0.98);
    cancelled.state = Some(RunState::Cancelled);
    let mut unstarted = lr_run("mixed", 2, 3e-3, &[], 0.0);
    unstarted.state = None;
    unstarted.test = None;
    let ok = lr_run("mixed", 3, 4e-3, &[0.5], 0.4);
    for r in [&failed, &cancelled, &unstarted, &ok] {
        write_run(&exp, r);
    }
    let s = summarize_experiment(&exp, &SelectSpec::default()).unwrap();
    assert_eq!(s.winner.as_deref(), Some(ok.id.as_str()));
    let reasons: Vec<&str> = s
        .excluded
        .iter()
        .filter_map(|r| r.reason.as_deref())
        .collect();
    assert_eq!(
        reasons,
        [
            "failed: worker exited with status 101",
            "cancelled",
            "never started (no status.json)"
        ]
    );
}

#[test]
fn a_corrupt_run_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let exp = lr_grid(&dir.path().join("runs"), "lr");
    let status = exp.join("02a0b1c2d3e4").join("status.json");
    std::fs::write(&status, "{\"state\": \"do").unwrap();
    let err = summarize_experiment(&exp, &SelectSpec::default()).unwrap_err();
    assert!(
        err.to_string().contains("02a0b1c2d3e4/status.json"),
        "{err}"
    );
    assert_eq!(orchestrate::Error::from(err).exit_code(), 2);
}

#[test]
fn best_prints_a_spec_that_loads_back_to_the_winner_config() {
    let dir = Sandbox::new();
    lr_grid(&dir.path().join("runs"), "lr");
    let out = dir.run(&["best", "lr"]);
    out.expect_code(0);
    let text = out.stdout;
    assert!(
        text.starts_with("# Winner of experiment `lr`: run 01a0b1c2d3e4"),
        "{text}"
    );
    let spec: Spec = toml::from_str(&text).expect("best prints valid TOML for a Spec");
    let mut expected = lr_spec("lr", 5e-4);
    expected.name = "lr-best".into();
    // Equal configs give equal run IDs: grid::expand hashes the config without its name.
    assert_eq!(spec, expected);
    assert!(!text.contains("[grid"), "the grid is left out:\n{text}");
}

#[test]
fn best_without_a_winner_or_experiment_is_a_usage_error() {
    let dir = Sandbox::new();
    let exp = dir.path().join("runs").join("bad");
    let mut failed = lr_run("bad", 0, 1e-3, &[0.9], 0.9);
    failed.state = Some(RunState::Failed);
    write_run(&exp, &failed);
    let out = dir.run(&["best", "bad"]);
    out.expect_code(2);
    assert!(out.stderr.contains("has no winner"), "{}", out.stderr);
    let out = dir.run(&["best", "nope"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("no experiment `nope`"),
        "{}",
        out.stderr
    );
}

/// Width and height of a PNG file, read by a decoder.
fn png_size(path: &std::path::Path) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    (info.width, info.height)
}

#[test]
fn report_draws_curves_and_bars() {
    let dir = Sandbox::new();
    lr_grid(&dir.path().join("runs"), "lr");
    let out = dir.run(&["report", "lr", "--out", "figs"]);
    out.expect_code(0);
    for f in [
        "train_loss.png",
        "dev_accuracy.png",
        "final_dev_accuracy.png",
    ] {
        let p = dir.path().join("figs").join(f);
        assert!(out.stdout.contains(f), "{}", out.stdout);
        assert_eq!(png_size(&p), (1000, 620), "{f}");
    }
    // A one-axis grid has no grouped figure.
    let n = std::fs::read_dir(dir.path().join("figs")).unwrap().count();
    assert_eq!(n, 3);
}

#[test]
fn report_on_the_seq2seq_grid_draws_the_four_combinations() {
    let dir = Sandbox::new();
    let exp = seq2seq_grid(&dir.path().join("runs"), "q3");
    let out = dir.run(&["report", "runs/q3"]);
    out.expect_code(0);
    for f in [
        "dev_error_rate_by_model_attention_and_decode_strategy.png",
        "test_error_rate_by_model_attention_and_decode_strategy.png",
    ] {
        assert_eq!(png_size(&exp.join("report").join(f)), (1000, 620), "{f}");
    }
    assert!(
        out.stdout
            .contains("best: attention-general-beam (5e03aa77bb99) dev/error_rate=0.3000 test/error_rate=0.3100"),
        "{}",
        out.stdout
    );
}

#[test]
fn ls_lists_experiments_with_states_and_winners() {
    let dir = Sandbox::new();
    let runs = dir.path().join("runs");
    lr_grid(&runs, "lr");
    seq2seq_grid(&runs, "q3");
    std::fs::create_dir_all(runs.join("empty")).unwrap();
    let out = dir.run(&["ls"]);
    out.expect_code(0);
    insta::assert_snapshot!("ls", out.stdout);
}
