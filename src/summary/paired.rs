//! `orchestrate diff A B --paired`: two single runs compared on the same test items.
//!
//! Each run's worker records every test item's result (`test_items.json`,
//! [`store::TestItems`]). Here both runs' items are resampled together, Koehn's paired
//! bootstrap with sacrebleu's defaults (1,000 resamples, seed 12345), and every test metric
//! that is a mean over items (`test/error_rate`, `test/accuracy`) is judged by the difference
//! B - A, its 95% percentile interval and p, by the rule that judges configurations of
//! replicates ([`significance::judge`]): one run being lucky on a few sentences no longer
//! fails CI, a real regression on the same sentences still does.

use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::configurations::Stat;
use super::diff::{
    ConfigDiff, Tolerances, align, config_diff, config_markdown, identity_notes, pretty_json,
    show_json,
};
use super::experiment::{Selection, entry, state_name};
use super::run::{LoadedRun, is_run_dir};
use super::significance::{self, FailOn, MeanDiff, Tested};
use super::{SummaryError, find_run, load_experiment, resolve_experiment};
use crate::stats::{self, PairedBootstrap};
use crate::store::{self, RunDir, RunState, TestItems};
use crate::train::seeding::{Stream, stream_rng};

/// Resamples of the test items (sacrebleu's `--paired-bs-n` default).
pub const RESAMPLES: usize = 1000;

/// The resampling seed (sacrebleu's default `SACREBLEU_SEED`): the same two runs always give
/// the same interval and p.
pub const SEED: u64 = 12345;

/// The paired bootstrap `diff --paired` computes for one metric: [`RESAMPLES`] draws from
/// the [`SEED`]ed stream, the same draws for every metric.
pub fn bootstrap(a: &[f64], b: &[f64]) -> Option<PairedBootstrap> {
    let mut rng = stream_rng(SEED, Stream::Bootstrap, 0);
    stats::paired_bootstrap(a, b, RESAMPLES, |n| rand::Rng::random_range(&mut rng, 0..n))
}

/// One side of a paired diff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedRun {
    /// The argument that named the run.
    pub arg: String,
    pub id: String,
    pub name: String,
    pub dir: PathBuf,
    /// The epoch whose weights were tested.
    pub test_epoch: usize,
}

/// The comparison of two runs item by item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedReport {
    pub a: PairedRun,
    pub b: PairedRun,
    /// Test items both runs were scored on.
    pub items: usize,
    /// The test set's digest ([`TestItems::test_set`]).
    pub test_set: String,
    pub resamples: usize,
    pub seed: u64,
    pub fail_on: FailOn,
    pub regression: bool,
    /// What differs beyond the configs (data files, numerics versions, stale results).
    pub notes: Vec<String>,
    /// Per metric: the means with n, B - A, the bootstrap interval and p, the verdict.
    pub metrics: Vec<MeanDiff>,
    pub config: Vec<ConfigDiff>,
}

/// The single run `arg` names: a run directory, `EXPERIMENT/RUN` (id, id prefix or name), or
/// an experiment of one run. An experiment of several runs is refused, listing them.
pub fn resolve_run(arg: &str, runs_dir: &Path) -> Result<LoadedRun, SummaryError> {
    let path = Path::new(arg);
    if path.is_dir() && is_run_dir(path) {
        let dir = path.canonicalize().map_err(|source| SummaryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let exp = dir.parent().unwrap_or(Path::new("/"));
        let (_, runs) = load_experiment(exp)?;
        return runs
            .into_iter()
            .find(|r| r.dir.file_name() == dir.file_name())
            .ok_or_else(|| {
                SummaryError::NotFound(format!("{arg}: not a run of {}", exp.display()))
            });
    }
    if let Ok(exp) = resolve_experiment(arg, runs_dir) {
        let (_, mut runs) = load_experiment(&exp)?;
        if runs.len() == 1 {
            return Ok(runs.remove(0));
        }
        let known: Vec<String> = runs
            .iter()
            .map(|r| format!("{} ({})", r.summary.run.id, r.summary.run.name))
            .collect();
        return Err(SummaryError::Usage(format!(
            "{arg}: experiment {} has {} runs and --paired compares two single runs; name one \
             as {arg}/RUN (its runs: {})",
            exp.display(),
            runs.len(),
            known.join(", ")
        )));
    }
    match arg.rsplit_once('/') {
        Some((experiment, key)) => find_run(experiment, key, runs_dir),
        None => Err(SummaryError::NotFound(format!(
            "no run `{arg}`: neither a run directory, an experiment under {} nor EXPERIMENT/RUN",
            runs_dir.display()
        ))),
    }
}

/// Compares run `b` with baseline run `a` on their shared test items; `fail_on` defaults to
/// `significant`, the point of pairing.
pub fn paired_diff(
    a_arg: &str,
    a: &LoadedRun,
    b_arg: &str,
    b: &LoadedRun,
    tol: &Tolerances,
    fail_on: Option<FailOn>,
) -> Result<PairedReport, SummaryError> {
    let fail_on = fail_on.unwrap_or(FailOn::Significant);
    let items_a = tested_items(a_arg, a)?;
    let items_b = tested_items(b_arg, b)?;
    if items_a.count != items_b.count || items_a.test_set != items_b.test_set {
        let side = |arg: &str, run: &LoadedRun, items: &TestItems| {
            format!(
                "{arg}: {} items, set {} ({})",
                items.count,
                short(&items.test_set),
                RunDir::at(&run.dir).test_items().display()
            )
        };
        return Err(SummaryError::Usage(format!(
            "A and B were tested on different test sets ({}; {}): a paired comparison needs \
             the same items in the same order (same test file, `data.test_limit` and, for \
             translation, `data.max_len` and columns)",
            side(a_arg, a, &items_a),
            side(b_arg, b, &items_b)
        )));
    }
    let tags: BTreeSet<&str> = items_a
        .metrics
        .keys()
        .chain(items_b.metrics.keys())
        .map(String::as_str)
        .collect();
    tol.check_tags(&tags)?;
    let select = Selection {
        metric: a.spec.select.metric.clone(),
        mode: a.spec.select.mode,
        rank: a.spec.select.rank,
    };
    let metrics: Vec<MeanDiff> = tags
        .iter()
        .map(|tag| {
            let (xa, xb) = (items_a.metrics.get(*tag), items_b.metrics.get(*tag));
            let test = xa
                .zip(xb)
                .and_then(|(xa, xb)| bootstrap(xa, xb))
                .map(|bs| Tested {
                    ci95: bs.ci95,
                    p: bs.p,
                });
            let stat = |x: Option<&Vec<f64>>| x.and_then(|x| Stat::of(x));
            significance::judge(tag, stat(xa), stat(xb), test, &select, tol, fail_on)
        })
        .collect();
    let (ea, eb) = (
        entry(&a.summary, None, false, None),
        entry(&b.summary, None, false, None),
    );
    let mut notes = identity_notes(&ea, &eb);
    for (side, e) in [("A", &ea), ("B", &eb)] {
        if let Some(s) = &e.stale {
            notes.push(format!("{side} is stale: {s}"));
        }
    }
    let side = |arg: &str, run: &LoadedRun, items: &TestItems| PairedRun {
        arg: arg.to_string(),
        id: run.summary.run.id.clone(),
        name: run.summary.run.name.clone(),
        dir: run.dir.clone(),
        test_epoch: items.epoch,
    };
    Ok(PairedReport {
        a: side(a_arg, a, &items_a),
        b: side(b_arg, b, &items_b),
        items: items_a.count,
        test_set: items_a.test_set.clone(),
        resamples: RESAMPLES,
        seed: SEED,
        fail_on,
        regression: metrics.iter().any(|m| m.regression),
        notes,
        metrics,
        config: config_diff(&a.summary.config, &b.summary.config),
    })
}

/// The run's per-item test results, refused unless the run finished, is whole and the file
/// adds up to the test metrics it recorded.
fn tested_items(arg: &str, run: &LoadedRun) -> Result<TestItems, SummaryError> {
    let info = &run.summary.run;
    let who = format!("{arg}: run {} ({})", info.id, info.name);
    if info.state != Some(RunState::Done) {
        return Err(SummaryError::Usage(format!(
            "{who} is {}; --paired compares finished runs",
            state_name(info.state)
        )));
    }
    if let Some(d) = &info.damaged {
        return Err(SummaryError::Usage(format!(
            "{who} is damaged: {d}; retrain it with --rerun {}",
            info.id
        )));
    }
    let rd = RunDir::at(&run.dir);
    let path = rd.test_items();
    let items = store::read_test_items(&rd)?.ok_or_else(|| {
        SummaryError::Usage(format!(
            "{who} has no per-item test results: {} is missing (the run was tested before \
             they were recorded); retrain it with `orchestrate run SPEC --rerun {}` to record \
             them",
            path.display(),
            info.id
        ))
    })?;
    let corrupt = |message: String| SummaryError::Parse {
        path: path.clone(),
        message: format!("{message}; retrain the run with --rerun {}", info.id),
    };
    for (tag, values) in &items.metrics {
        if values.len() != items.count {
            return Err(corrupt(format!(
                "{tag} has {} values for {} items",
                values.len(),
                items.count
            )));
        }
        // A file of another test of this run (or of another run) would not add up to the
        // values the run recorded.
        let mean = stats::mean(values);
        match run.summary.metrics.test.get(tag) {
            Some(v) if (v.get() - mean).abs() <= 1e-12 * v.get().abs().max(1.0) => {}
            recorded => {
                return Err(corrupt(format!(
                    "the mean of its {tag} values is {mean}, but the run recorded {}",
                    recorded.map_or("none".into(), |v| v.to_string())
                )));
            }
        }
    }
    Ok(items)
}

/// The first hex digits of a digest, as many as a run ID has.
fn short(digest: &str) -> &str {
    digest
        .get(..crate::grid::identity::ID_LEN)
        .unwrap_or(digest)
}

impl PairedReport {
    /// The headline: whether the diff passes, naming the first failing metric.
    pub fn headline(&self) -> String {
        let rule = significance::fail_rule(self.fail_on, "paired bootstrap");
        let n = self.metrics.len();
        let bad: Vec<&MeanDiff> = self.metrics.iter().filter(|m| m.regression).collect();
        match bad.first() {
            None => format!("OK: no test metric of {n} {rule}"),
            Some(m) => format!(
                "REGRESSION: {} of {n} test metric(s) {rule}; {}",
                bad.len(),
                m.describe()
            ),
        }
    }

    fn side_line(r: &PairedRun) -> String {
        format!(
            "{} (run {}, {}, tested at epoch {})",
            r.arg, r.id, r.name, r.test_epoch
        )
    }

    fn method_line(&self) -> String {
        format!(
            "paired bootstrap over {} test items (set {}), {} resamples, seed {}",
            self.items,
            short(&self.test_set),
            self.resamples,
            self.seed
        )
    }

    /// Aligned plain-text tables for the terminal.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "A: {}\nB: {}\n{}\n{}\n",
            Self::side_line(&self.a),
            Self::side_line(&self.b),
            self.method_line(),
            self.headline()
        );
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let mut rows = vec![
            ["metric", "A", "B", "delta", "95% CI", "p", "verdict"]
                .map(String::from)
                .to_vec(),
        ];
        for m in &self.metrics {
            let mut row = vec![m.tag.clone()];
            row.extend(m.cells());
            row.push(m.verdict().into());
            rows.push(row);
        }
        for c in &self.config {
            let mut row = vec![String::new(); 7];
            row[0] = format!("config {}", c.key);
            row[1] = show_json(&c.a);
            row[2] = show_json(&c.b);
            row[6] = "changed".into();
            rows.push(row);
        }
        out.push_str(&align(&rows, "  "));
        out
    }

    /// Markdown for a pull-request comment.
    pub fn to_markdown(&self) -> String {
        let icon = if self.regression { "❌" } else { "✅" };
        let mut md = format!(
            "### {icon} orchestrate diff --paired: {}\n\n",
            self.headline()
        );
        let _ = write!(
            md,
            "- A (baseline): `{}`\n- B: `{}`\n- {}\n",
            Self::side_line(&self.a),
            Self::side_line(&self.b),
            self.method_line()
        );
        for n in &self.notes {
            let _ = writeln!(md, "- note: {n}");
        }
        md.push_str(
            "\n| metric | A | B | Δ | 95% CI | p | verdict |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | --- |\n",
        );
        for m in &self.metrics {
            let _ = writeln!(md, "| {} |", m.markdown_cells());
        }
        md.push('\n');
        let configs: Vec<(Option<&str>, &ConfigDiff)> =
            self.config.iter().map(|c| (None, c)).collect();
        md.push_str(&config_markdown(&configs));
        md
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        pretty_json(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn floats(v: &Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    #[test]
    fn diff_paired_estimates_the_exact_bootstrap_distribution() {
        // `tools/bootstrap_fixtures.py` computed the exact distribution of the resampled mean
        // difference (all n^n draws, by convolution). Our 1,000 draws estimate it: the share
        // of draws on the far side of zero has a standard error of sqrt(q(1-q)/1000), so p
        // (twice that share, plus 2/1001 for the +1) is allowed 4 of them; each end of the
        // interval must sit where the exact distribution has 2.5% (97.5%) of its mass, give
        // or take 4 standard errors of a share of 0.025 in 1,000 (0.0198).
        let r: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/stats/bootstrap.json"))
                .unwrap();
        for case in r["exact"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let (a, b) = (floats(&case["a"]), floats(&case["b"]));
            let bs = bootstrap(&a, &b).unwrap();
            assert_eq!(bs.resamples, RESAMPLES);
            let want = case["diff"].as_f64().unwrap();
            assert!(
                (bs.diff - want).abs() < 1e-12,
                "{name}: {} vs {want}",
                bs.diff
            );

            let p_ideal = case["p_ideal"].as_f64().unwrap();
            let q = p_ideal / 2.0;
            let tol = 4.0 * 2.0 * (q * (1.0 - q) / RESAMPLES as f64).sqrt()
                + 2.0 / (RESAMPLES + 1) as f64;
            assert!(
                (bs.p - p_ideal).abs() <= tol,
                "{name}: p {} vs exact {p_ideal} (tolerance {tol})",
                bs.p
            );

            let values = floats(&case["values"]);
            let probs = floats(&case["probabilities"]);
            let below = |x: f64| -> f64 {
                values
                    .iter()
                    .zip(&probs)
                    .filter(|(v, _)| **v < x - 1e-12)
                    .map(|(_, p)| p)
                    .sum()
            };
            let at_most = |x: f64| -> f64 {
                values
                    .iter()
                    .zip(&probs)
                    .filter(|(v, _)| **v <= x + 1e-12)
                    .map(|(_, p)| p)
                    .sum()
            };
            let slack = 4.0 * (0.025 * 0.975 / RESAMPLES as f64).sqrt();
            for (end, q) in [(bs.ci95.low, 0.025), (bs.ci95.high, 0.975)] {
                assert!(
                    below(end) <= q + slack && at_most(end) >= q - slack,
                    "{name}: interval end {end} holds {}..{} of the exact mass, not {q}",
                    below(end),
                    at_most(end)
                );
            }
        }
    }

    #[test]
    fn the_same_runs_give_the_same_interval_and_p() {
        let a: Vec<f64> = (0..50).map(|i| f64::from(i % 7) / 7.0).collect();
        let b: Vec<f64> = (0..50).map(|i| f64::from(i % 5) / 5.0).collect();
        assert_eq!(bootstrap(&a, &b), bootstrap(&a, &b));
    }
}
