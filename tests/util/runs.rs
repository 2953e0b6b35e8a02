//! Run directories written by hand, in the layout the orchestrator and workers leave them:
//! `config.toml`, `plan.json`, `status.json` and `metrics.jsonl`; and those files read back
//! as JSON.

use orchestrate::spec::{Attention, DecodeStrategy, ModelKind, SelectMode, SelectSpec, Spec};
use orchestrate::store::{MetricRecord, RunDir, RunState, RunStatus};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One run to write.
pub struct FakeRun {
    pub index: usize,
    pub id: String,
    pub name: String,
    pub varied: serde_json::Value,
    pub spec: Spec,
    /// `None`: no status.json (never started).
    pub state: Option<RunState>,
    /// The select metric per epoch (epochs 1..=len).
    pub dev: Vec<f64>,
    /// The test value of the select metric's quantity, logged after the last epoch.
    pub test: Option<f64>,
    /// Seconds per epoch: differs between otherwise identical runs.
    pub epoch_seconds: f64,
}

/// The Q2 homework set-up: CNN, Adam, 3 epochs, selected on dev accuracy.
pub fn lr_spec(experiment: &str, lr: f64) -> Spec {
    let mut spec = Spec {
        name: experiment.into(),
        ..Spec::default()
    };
    spec.train.epochs = 3;
    spec.optimizer.lr = lr;
    spec
}

/// A finished run of the learning-rate grid.
pub fn lr_run(experiment: &str, index: usize, lr: f64, dev: &[f64], test: f64) -> FakeRun {
    FakeRun {
        index,
        id: format!("{index:02}a0b1c2d3e4"),
        name: format!("adam-lr{lr}"),
        varied: serde_json::json!({ "optimizer.lr": lr }),
        spec: lr_spec(experiment, lr),
        state: Some(RunState::Done),
        dev: dev.to_vec(),
        test: Some(test),
        epoch_seconds: 2.5 + index as f64,
    }
}

/// Writes `run` under `exp_dir/<id>/`.
pub fn write_run(exp_dir: &Path, run: &FakeRun) {
    let rd = RunDir::at(exp_dir.join(&run.id));
    std::fs::create_dir_all(rd.root()).unwrap();
    std::fs::write(rd.config(), toml::to_string(&run.spec).unwrap()).unwrap();
    let plan = serde_json::json!({
        "index": run.index,
        "id": run.id,
        "training_id": format!("t{}", run.id),
        "name": run.name,
        "varied": run.varied,
        // Written by this build: current, unless a test says otherwise.
        "numerics": orchestrate::grid::identity::numerics_version(run.spec.model.kind),
    });
    std::fs::write(rd.plan(), serde_json::to_string(&plan).unwrap()).unwrap();
    if let Some(state) = run.state {
        let status = RunStatus {
            state,
            attempts: 1,
            epoch: run.dev.len(),
            message: match state {
                RunState::Diverged => Some("train/loss is NaN at epoch 2".into()),
                RunState::Failed => Some("worker exited with status 101".into()),
                _ => None,
            },
            pid: None,
            pruned: None,
        };
        std::fs::write(rd.status(), serde_json::to_string(&status).unwrap()).unwrap();
    }
    let metric = &run.spec.select.metric;
    let split_name = metric.split_once('/').map_or("accuracy", |(_, n)| n);
    let mut f = std::fs::File::create(rd.metrics()).unwrap();
    let mut line = |epoch: usize, step: u64, tag: &str, value: f64| {
        let rec = MetricRecord {
            epoch,
            step,
            tag: tag.into(),
            value,
        };
        // NaN has no JSON number; write it the way serde_json does (null).
        let text = serde_json::to_string(&rec).unwrap();
        writeln!(f, "{text}").unwrap();
    };
    let steps_per_epoch = 50u64;
    for (i, &dev) in run.dev.iter().enumerate() {
        let epoch = i + 1;
        let step = steps_per_epoch * epoch as u64;
        let loss = if dev.is_nan() {
            f64::NAN
        } else {
            1.0 - dev + 0.25 / epoch as f64
        };
        line(epoch, step - 25, "train/loss", loss + 0.1);
        line(epoch, step, "train/loss", loss);
        line(epoch, step, "lr", run.spec.optimizer.lr);
        line(epoch, step, "dev/loss", loss + 0.05);
        line(epoch, step, metric, dev);
        line(epoch, step, "time/epoch_seconds", run.epoch_seconds);
    }
    if let Some(test) = run.test {
        let epoch = run.dev.len();
        let step = steps_per_epoch * epoch as u64;
        line(epoch, step, &format!("test/{split_name}"), test);
        line(epoch, step, "time/test_seconds", 0.75);
    }
}

/// The homework's Q2 grid: three learning rates, the middle one wins, plus a diverged run.
pub fn lr_grid(runs_dir: &Path, experiment: &str) -> PathBuf {
    let exp = runs_dir.join(experiment);
    write_run(
        &exp,
        &lr_run(experiment, 0, 1e-5, &[0.41, 0.52, 0.58], 0.57),
    );
    write_run(
        &exp,
        &lr_run(experiment, 1, 5e-4, &[0.80, 0.86, 0.8712], 0.865),
    );
    write_run(
        &exp,
        &lr_run(experiment, 2, 1e-3, &[0.82, 0.85, 0.8625], 0.851),
    );
    let mut diverged = lr_run(experiment, 3, 1e-2, &[0.30, f64::NAN], 0.1);
    diverged.state = Some(RunState::Diverged);
    diverged.test = None;
    write_run(&exp, &diverged);
    exp
}

/// The homework's Q3 grid: attention on/off x greedy/beam, selected on dev error rate.
pub fn seq2seq_grid(runs_dir: &Path, experiment: &str) -> PathBuf {
    let exp = runs_dir.join(experiment);
    let cases = [
        (Attention::None, DecodeStrategy::Greedy, [0.62, 0.55], 0.57),
        (Attention::None, DecodeStrategy::Beam, [0.60, 0.52], 0.54),
        (
            Attention::General,
            DecodeStrategy::Greedy,
            [0.41, 0.33],
            0.35,
        ),
        (Attention::General, DecodeStrategy::Beam, [0.39, 0.30], 0.31),
    ];
    for (index, (attention, strategy, dev, test)) in cases.into_iter().enumerate() {
        let mut spec = Spec {
            name: experiment.into(),
            ..Spec::default()
        };
        spec.model.kind = ModelKind::Seq2seq;
        spec.model.attention = attention;
        spec.decode.strategy = strategy;
        spec.train.epochs = 2;
        spec.select = SelectSpec {
            metric: "dev/error_rate".into(),
            mode: SelectMode::Min,
            evaluate_test: true,
            ..SelectSpec::default()
        };
        let a = serde_json::to_value(attention).unwrap();
        let s = serde_json::to_value(strategy).unwrap();
        let name = format!("attention-{}-{}", a.as_str().unwrap(), s.as_str().unwrap());
        write_run(
            &exp,
            &FakeRun {
                index,
                id: format!("5e{index:02}aa77bb99"),
                name,
                varied: serde_json::json!({"model.attention": a, "decode.strategy": s}),
                spec,
                state: Some(RunState::Done),
                dev: dev.to_vec(),
                test: Some(test),
                epoch_seconds: 10.0 + index as f64,
            },
        );
    }
    exp
}

/// `status.json` of a run directory as JSON, if readable.
pub fn status(run_dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// `plan.json` of a run directory.
pub fn plan(run_dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("plan.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Run directories of an experiment, sorted by plan index.
pub fn run_dirs(exp_dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<(u64, PathBuf)> = std::fs::read_dir(exp_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter_map(|p| Some((plan(&p)?["index"].as_u64()?, p)))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter().map(|(_, p)| p).collect()
}

/// A run's metrics without timings (`time/*` never repeat exactly), as exact bit patterns.
pub fn metrics_without_timings(run_dir: &Path) -> Vec<(u64, u64, String, u64)> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| !v["tag"].as_str().unwrap_or("").starts_with("time/"))
        .map(|v| {
            (
                v["epoch"].as_u64().unwrap_or(0),
                v["step"].as_u64().unwrap_or(0),
                v["tag"].as_str().unwrap_or("").to_string(),
                v["value"].as_f64().map_or(u64::MAX, f64::to_bits),
            )
        })
        .collect()
}
