//! Value checks on a typed `Spec`: ranges, non-empty lists, safe names.
//!
//! Pure: a spec in, the list of violations out. The loader attaches where each value came
//! from; the grid attaches which axis set it.

use super::schema::fmt_float;
use super::types::*;

/// One value out of its allowed range.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Dotted key path.
    pub key: String,
    /// The value as TOML.
    pub value: String,
    /// What is allowed.
    pub message: String,
}

/// Names of experiments and runs become directory names under `runs/`: keep them one plain
/// path component.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 100 {
        return Err("must be at most 100 characters".into());
    }
    if name.starts_with('.') || name.contains("..") {
        return Err("must not start with `.` or contain `..`".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "character {c:?} is not allowed; use letters, digits, `_`, `.` and `-`"
        ));
    }
    Ok(())
}

/// A device string: `cpu`, `cuda`, `cuda:N` or `auto`, as [`crate::device::Device`] parses it.
pub fn check_device(device: &str) -> Result<(), String> {
    device
        .parse::<crate::device::Device>()
        .map(|_| ())
        .map_err(|_| crate::device::ALLOWED.into())
}

struct Checker {
    out: Vec<Violation>,
}

impl Checker {
    fn fail(&mut self, key: &str, value: String, message: &str) {
        self.out.push(Violation {
            key: key.into(),
            value,
            message: message.into(),
        });
    }
    fn positive(&mut self, key: &str, v: usize) {
        if v == 0 {
            self.fail(key, "0".into(), "must be at least 1");
        }
    }
    fn positive_f(&mut self, key: &str, v: f64) {
        if !(v > 0.0 && v.is_finite()) {
            self.fail(key, fmt_float(v), "must be a finite number greater than 0");
        }
    }
    fn non_negative_f(&mut self, key: &str, v: f64) {
        if !(v >= 0.0 && v.is_finite()) {
            self.fail(key, fmt_float(v), "must be a finite number >= 0");
        }
    }
    fn unit_interval(&mut self, key: &str, v: f64) {
        if !(0.0..1.0).contains(&v) {
            self.fail(
                key,
                fmt_float(v),
                "must be in [0, 1): at least 0 and below 1",
            );
        }
    }
    fn text(&mut self, key: &str, v: &str, r: Result<(), String>) {
        if let Err(m) = r {
            self.fail(key, format!("{v:?}"), &m);
        }
    }
}

/// The most replicates a configuration may have.
pub const MAX_REPEATS: u32 = 1000;

/// Every range violation in `spec`, in a fixed order.
pub fn check(spec: &Spec) -> Vec<Violation> {
    let mut c = Checker { out: Vec::new() };
    c.text("name", &spec.name, check_name(&spec.name));
    if spec.seed > i64::MAX as u64 {
        c.fail(
            "seed",
            spec.seed.to_string(),
            "must be at most 9223372036854775807 (TOML integers are signed 64-bit)",
        );
    }

    if !(1..=MAX_REPEATS).contains(&spec.repeats) {
        c.fail(
            "repeats",
            spec.repeats.to_string(),
            &format!("must be between 1 and {MAX_REPEATS}"),
        );
    }
    // The grid numbers the replicates itself; a hand-set one would be overwritten.
    if spec.repeats > 1 && spec.replicate != 0 {
        c.fail(
            "replicate",
            spec.replicate.to_string(),
            &format!(
                "is set per run when repeats = {} > 1; leave it out",
                spec.repeats
            ),
        );
    }

    let d = &spec.data;
    c.unit_interval("data.dev_fraction", d.dev_fraction);
    if d.dir.is_empty() {
        c.fail("data.dir", "\"\"".into(), "must name the data directory");
    }
    if d.train.is_empty() {
        c.fail("data.train", "\"\"".into(), "must name the training file");
    }
    // The model kind decides what the files must hold: sentence pairs or images.
    let reads_pairs = spec.model.kind == ModelKind::Seq2seq;
    if reads_pairs != (d.format == DataFormat::TsvPairs) {
        let (value, message) = match d.format {
            DataFormat::Idx => (
                "\"idx\"",
                "model.kind = \"seq2seq\" reads sentence pairs; allowed: \"tsv-pairs\"",
            ),
            DataFormat::Npz => (
                "\"npz\"",
                "model.kind = \"seq2seq\" reads sentence pairs; allowed: \"tsv-pairs\"",
            ),
            DataFormat::TsvPairs => (
                "\"tsv-pairs\"",
                "cnn and mlp models read images; allowed: \"idx\", \"npz\"",
            ),
        };
        c.fail("data.format", value.into(), message);
    }
    if d.format == DataFormat::TsvPairs {
        for (key, file) in [("data.dev", &d.dev), ("data.test", &d.test)] {
            if file.is_empty() {
                c.fail(
                    key,
                    "\"\"".into(),
                    "must name a TSV file: tsv-pairs reads its own split",
                );
            }
        }
        c.positive("data.max_len", d.max_len);
        if d.source_column == d.target_column {
            c.fail(
                "data.target_column",
                d.target_column.to_string(),
                "must differ from data.source_column",
            );
        }
    }

    let m = &spec.model;
    for (i, b) in m.conv.iter().enumerate() {
        c.positive(&format!("model.conv.{i}.channels"), b.channels);
        c.positive(&format!("model.conv.{i}.kernel"), b.kernel);
        c.positive(&format!("model.conv.{i}.stride"), b.stride);
    }
    for (i, &h) in m.hidden.iter().enumerate() {
        c.positive(&format!("model.hidden.{i}"), h);
    }
    c.unit_interval("model.dropout", m.dropout);
    c.positive("model.embedding_dim", m.embedding_dim);
    c.positive("model.encoder_hidden", m.encoder_hidden);
    c.positive("model.decoder_hidden", m.decoder_hidden);

    let o = &spec.optimizer;
    c.positive_f("optimizer.lr", o.lr);
    c.non_negative_f("optimizer.l2_decay", o.l2_decay);
    c.unit_interval("optimizer.momentum", o.momentum);
    c.unit_interval("optimizer.betas.0", o.betas[0]);
    c.unit_interval("optimizer.betas.1", o.betas[1]);
    c.positive_f("optimizer.eps", o.eps);
    c.positive_f("optimizer.gamma", o.gamma);
    if o.schedule == Schedule::Step {
        c.positive("optimizer.step_size", o.step_size);
    }

    let t = &spec.train;
    c.positive("train.epochs", t.epochs);
    c.positive("train.batch_size", t.batch_size);
    c.text("train.device", &t.device, check_device(&t.device));
    c.non_negative_f("train.early_stopping.min_delta", t.early_stopping.min_delta);
    if t.checkpoint.keep_last == 0 {
        c.fail(
            "train.checkpoint.keep_last",
            "0".into(),
            "must be at least 1: resuming needs the last checkpoint",
        );
    }

    let dec = &spec.decode;
    c.positive("decode.beam_width", dec.beam_width);
    c.non_negative_f("decode.length_penalty", dec.length_penalty);
    c.positive("decode.max_len", dec.max_len);

    let metric = &spec.select.metric;
    let well_formed = metric
        .split_once('/')
        .is_some_and(|(split, name)| matches!(split, "train" | "dev" | "test") && !name.is_empty());
    if !well_formed {
        c.fail(
            "select.metric",
            format!("{metric:?}"),
            "must be `<split>/<metric>` with split train, dev or test, e.g. \"dev/accuracy\"",
        );
    }

    // The best epoch's weights exist only while retention keeps them.
    if spec.select.test_checkpoint == Some(TestCheckpoint::Best) && !t.checkpoint.keep_best {
        c.fail(
            "select.test_checkpoint",
            "\"best\"".into(),
            "needs train.checkpoint.keep_best = true (the best checkpoint is not kept); \
             set test_checkpoint = \"final\" or keep_best = true",
        );
    }

    let l = &spec.launch;
    c.positive("launch.jobs", l.jobs);
    c.positive("launch.jobs_per_device", l.jobs_per_device);
    c.positive("launch.max_runs", l.max_runs);
    for (i, dev) in l.devices.iter().enumerate() {
        c.text(&format!("launch.devices.{i}"), dev, check_device(dev));
    }
    c.out.extend(super::slurm_checks::check(&l.slurm));

    let sc = &spec.schedule;
    if sc.kind != ScheduleKind::None {
        c.positive("schedule.min_epochs", sc.min_epochs);
        if sc.reduction_factor < 2 {
            c.fail(
                "schedule.reduction_factor",
                sc.reduction_factor.to_string(),
                "must be at least 2: each rung keeps the best 1/reduction_factor of its runs",
            );
        }
        let max = sc.max_epochs_for(t.epochs);
        if max > t.epochs {
            c.fail(
                "schedule.max_epochs",
                max.to_string(),
                &format!("must be at most train.epochs ({})", t.epochs),
            );
        } else if sc.min_epochs >= max && sc.min_epochs > 0 {
            c.fail(
                "schedule.min_epochs",
                sc.min_epochs.to_string(),
                &format!(
                    "must be below schedule.max_epochs ({max}): no run could be stopped early"
                ),
            );
        }
    }
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let s = Spec {
            name: "x".into(),
            ..Spec::default()
        };
        assert_eq!(check(&s), vec![]);
    }

    fn scheduled(kind: ScheduleKind, min: usize, eta: usize, max: usize) -> Spec {
        let mut s = Spec {
            name: "x".into(),
            ..Spec::default()
        };
        s.train.epochs = 9;
        s.schedule = ScheduleSpec {
            kind,
            min_epochs: min,
            reduction_factor: eta,
            max_epochs: max,
        };
        s
    }

    #[test]
    fn schedules_name_the_bad_key_and_value() {
        let sh = ScheduleKind::SuccessiveHalving;
        assert_eq!(check(&scheduled(sh, 1, 3, 0)), vec![]);
        assert_eq!(check(&scheduled(ScheduleKind::Median, 2, 3, 9)), vec![]);
        let keys = |s: &Spec| -> Vec<(String, String)> {
            check(s).into_iter().map(|v| (v.key, v.value)).collect()
        };
        assert_eq!(
            keys(&scheduled(sh, 0, 1, 0)),
            [
                ("schedule.min_epochs".to_string(), "0".to_string()),
                ("schedule.reduction_factor".to_string(), "1".to_string())
            ]
        );
        assert_eq!(
            keys(&scheduled(sh, 1, 3, 10)),
            [("schedule.max_epochs".to_string(), "10".to_string())]
        );
        let v = check(&scheduled(ScheduleKind::Asha, 9, 3, 0));
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].key.as_str(), v[0].value.as_str()),
            ("schedule.min_epochs", "9")
        );
        assert!(
            v[0].message.contains("below schedule.max_epochs (9)"),
            "{}",
            v[0].message
        );
        // `none` ignores the numbers: nothing is stopped.
        assert_eq!(check(&scheduled(ScheduleKind::None, 0, 0, 0)), vec![]);
    }

    #[test]
    fn best_test_checkpoint_needs_the_best_checkpoint_kept() {
        let mut s = Spec {
            name: "x".into(),
            ..Spec::default()
        };
        s.train.checkpoint.keep_best = false;
        assert_eq!(
            s.test_checkpoint(),
            TestCheckpoint::Final,
            "unset follows keep_best"
        );
        assert_eq!(check(&s), vec![]);
        s.select.test_checkpoint = Some(TestCheckpoint::Best);
        let v = check(&s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            (v[0].key.as_str(), v[0].value.as_str()),
            ("select.test_checkpoint", "\"best\"")
        );
        s.train.checkpoint.keep_best = true;
        assert_eq!(check(&s), vec![]);
        assert_eq!(s.test_checkpoint(), TestCheckpoint::Best);
        s.select.test_checkpoint = None;
        assert_eq!(
            s.test_checkpoint(),
            TestCheckpoint::Best,
            "the default with keep_best"
        );
    }

    #[test]
    fn names_stay_one_path_component() {
        for ok in ["q2_grid", "a.b-c", "lr1e-5"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "../x", "a/b", "a\\b", ".hidden", "a b", "x..y"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn devices() {
        for ok in ["cpu", "cuda", "cuda:0", "cuda:12", "auto"] {
            assert!(check_device(ok).is_ok());
        }
        for bad in ["gpu", "cuda:", "cuda:x", ""] {
            assert!(check_device(bad).is_err());
        }
    }
}
