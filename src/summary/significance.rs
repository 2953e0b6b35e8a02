//! `diff` of configurations of replicates: per metric the difference of the means, its 95%
//! interval and Welch's p, so that CI fails on a regression that is larger than the noise
//! between seeds, not on the noise itself.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

use super::configurations::{ConfigurationEntry, Stat};
use super::diff::{Direction, Tolerances, direction};
use super::experiment::{ExperimentSummary, Selection};
use super::num::{Num, fmt_p, p_clause};
use crate::spec::SelectMode;
use crate::stats;

/// Which worsening fails `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FailOn {
    /// Any worsening beyond tolerance, run by run (and of a configuration's mean).
    Any,
    /// Only a worsening beyond tolerance with p < 0.05: of a configuration's mean (Welch), or
    /// with `--paired` of a test metric (paired bootstrap).
    Significant,
}

/// The p-value below which a difference of means counts as real.
pub const ALPHA: f64 = 0.05;

/// What fails under `fail_on`, in a headline's words; `test` names the significance test
/// (`Welch`, `paired bootstrap`).
pub fn fail_rule(fail_on: FailOn, test: &str) -> String {
    match fail_on {
        FailOn::Significant => format!("significantly worse ({test} p < {ALPHA}) beyond tolerance"),
        FailOn::Any => "worse beyond tolerance".into(),
    }
}

/// The fewest replicates a side needs for `significant` to be the default.
pub const MIN_REPLICATES: usize = 3;

/// `--fail-on` when not given: `significant` when every configuration on both sides has at
/// least [`MIN_REPLICATES`] replicates, else `any`.
pub fn default_fail_on(a: &ExperimentSummary, b: &ExperimentSummary) -> FailOn {
    let enough = |s: &ExperimentSummary| {
        !s.configurations.is_empty()
            && s.configurations
                .iter()
                .all(|c| c.runs.len() >= MIN_REPLICATES)
    };
    if enough(a) && enough(b) {
        FailOn::Significant
    } else {
        FailOn::Any
    }
}

/// One metric of one configuration on both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeanDiff {
    pub tag: String,
    pub a: Option<Stat>,
    pub b: Option<Stat>,
    /// mean(B) - mean(A).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<Num>,
    /// The 95% interval of `delta` (Welch's, or the paired bootstrap's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci95: Option<[Num; 2]>,
    /// The test's two-sided p-value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p: Option<Num>,
    pub direction: Direction,
    /// The allowed worsening for A's mean.
    pub tolerance: Num,
    /// B's mean is worse than A's by more than the tolerance.
    pub beyond_tolerance: bool,
    /// ... and the test's p is below [`ALPHA`].
    pub significant: bool,
    /// Fails the diff under the `--fail-on` in force.
    pub regression: bool,
}

/// One configuration of A, B or both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigurationDiff {
    pub configuration: String,
    pub id_a: Option<String>,
    pub id_b: Option<String>,
    pub regression: bool,
    pub notes: Vec<String>,
    pub metrics: Vec<MeanDiff>,
}

impl MeanDiff {
    /// `test/accuracy 0.8590 -> 0.8480 (-0.0110, 95% CI [-0.0150, -0.0070]), n=5/5, p=0.0004`.
    pub fn describe(&self) -> String {
        use super::num::{fmt_delta, fmt_metric};
        let mean = |s: &Option<Stat>| s.as_ref().map_or("-".into(), |s| fmt_metric(s.mean.get()));
        let n = |s: &Option<Stat>| s.as_ref().map_or(0, |s| s.n);
        let mut out = format!("{} {} -> {}", self.tag, mean(&self.a), mean(&self.b));
        if let Some(d) = self.delta {
            out.push_str(&format!(" ({}", fmt_delta(d.get())));
            if let Some([l, h]) = self.ci95 {
                out.push_str(&format!(
                    ", 95% CI [{}, {}]",
                    fmt_delta(l.get()),
                    fmt_delta(h.get())
                ));
            }
            out.push(')');
        }
        out.push_str(&format!(", n={}/{}", n(&self.a), n(&self.b)));
        if let Some(p) = self.p {
            out.push_str(&format!(", {}", p_clause(p.get())));
        }
        out
    }

    /// The word for this metric's outcome in tables.
    pub fn verdict(&self) -> &'static str {
        if self.regression {
            "WORSE"
        } else if self.beyond_tolerance {
            "worse, not significant"
        } else {
            "ok"
        }
    }

    /// The Markdown cells from the tag on: `` `tag` | A | B | Δ | CI | p | verdict ``, a
    /// failing verdict in bold.
    pub fn markdown_cells(&self) -> String {
        let verdict = if self.regression {
            format!("**{}**", self.verdict())
        } else {
            self.verdict().to_string()
        };
        format!("`{}` | {} | {verdict}", self.tag, self.cells().join(" | "))
    }

    /// The table cells: A mean, B mean, delta, its 95% interval and p.
    pub fn cells(&self) -> [String; 5] {
        use super::num::fmt_delta;
        let stat = |s: &Option<Stat>| s.as_ref().map_or("-".into(), Stat::show);
        [
            stat(&self.a),
            stat(&self.b),
            self.delta.map_or("-".into(), |d| fmt_delta(d.get())),
            self.ci95.map_or("-".into(), |[l, h]| {
                format!("[{}, {}]", fmt_delta(l.get()), fmt_delta(h.get()))
            }),
            self.p.map_or("-".into(), |p| fmt_p(p.get())),
        ]
    }
}

/// Compares the configurations of `a` and `b` (matched by name when unique on both sides,
/// else by ID); empty when either side has none.
pub fn compare(
    a: &ExperimentSummary,
    b: &ExperimentSummary,
    tol: &Tolerances,
    fail_on: FailOn,
) -> Vec<ConfigurationDiff> {
    if a.configurations.is_empty() || b.configurations.is_empty() {
        return Vec::new();
    }
    let unique = |cs: &[ConfigurationEntry], name: &str| {
        !name.is_empty() && cs.iter().filter(|c| c.name == name).count() == 1
    };
    let mut used = vec![false; b.configurations.len()];
    let mut out = Vec::new();
    for ca in &a.configurations {
        let j = b.configurations.iter().enumerate().position(|(j, cb)| {
            !used[j]
                && if unique(&a.configurations, &ca.name) && unique(&b.configurations, &ca.name) {
                    cb.name == ca.name
                } else {
                    cb.id == ca.id
                }
        });
        let label = if ca.name.is_empty() {
            ca.id.clone()
        } else {
            ca.name.clone()
        };
        let Some(j) = j else {
            out.push(ConfigurationDiff {
                configuration: label,
                id_a: Some(ca.id.clone()),
                id_b: None,
                regression: true,
                notes: vec!["missing in B".into()],
                metrics: Vec::new(),
            });
            continue;
        };
        used[j] = true;
        let cb = &b.configurations[j];
        let metrics = metrics_of(ca, cb, &a.select, tol, fail_on);
        let mut notes = Vec::new();
        if ca.rank.is_some() && cb.rank.is_none() {
            notes.push(format!(
                "set apart in B: {}",
                cb.reason.as_deref().unwrap_or("not ranked")
            ));
        }
        out.push(ConfigurationDiff {
            configuration: label,
            id_a: Some(ca.id.clone()),
            id_b: Some(cb.id.clone()),
            regression: !notes.is_empty() || metrics.iter().any(|m| m.regression),
            notes,
            metrics,
        });
    }
    for (j, cb) in b.configurations.iter().enumerate() {
        if !used[j] {
            out.push(ConfigurationDiff {
                configuration: if cb.name.is_empty() {
                    cb.id.clone()
                } else {
                    cb.name.clone()
                },
                id_a: None,
                id_b: Some(cb.id.clone()),
                regression: false,
                notes: vec!["new in B".into()],
                metrics: Vec::new(),
            });
        }
    }
    out
}

fn metrics_of(
    ca: &ConfigurationEntry,
    cb: &ConfigurationEntry,
    select: &Selection,
    tol: &Tolerances,
    fail_on: FailOn,
) -> Vec<MeanDiff> {
    let side = |c: &ConfigurationEntry| -> BTreeMap<String, Stat> {
        let mut m = c.test.clone();
        if let Some(s) = &c.select {
            m.insert(select.metric.clone(), s.clone());
        }
        m
    };
    let (ma, mb) = (side(ca), side(cb));
    let tags: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    tags.into_iter()
        .map(|tag| mean_diff(tag, ma.get(tag), mb.get(tag), select, tol, fail_on))
        .collect()
}

fn mean_diff(
    tag: &str,
    a: Option<&Stat>,
    b: Option<&Stat>,
    select: &Selection,
    tol: &Tolerances,
    fail_on: FailOn,
) -> MeanDiff {
    let welch = a
        .zip(b)
        .and_then(|(a, b)| stats::welch_described(&a.describe(), &b.describe()));
    let test = welch.map(|w| Tested {
        ci95: w.ci95,
        p: w.p,
    });
    judge(tag, a.cloned(), b.cloned(), test, select, tol, fail_on)
}

/// A test of `mean(B) - mean(A)`: its 95% interval and two-sided p.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tested {
    pub ci95: stats::Interval,
    pub p: f64,
}

/// Judges one metric's means on both sides with the test of their difference (Welch's over
/// replicates, the paired bootstrap over test items): worse beyond the tolerance, significant
/// (p < [`ALPHA`]), and whether that fails the diff under `fail_on`.
pub fn judge(
    tag: &str,
    a: Option<Stat>,
    b: Option<Stat>,
    test: Option<Tested>,
    select: &Selection,
    tol: &Tolerances,
    fail_on: FailOn,
) -> MeanDiff {
    let dir = direction(tag, select);
    let tolerance = a
        .as_ref()
        .map_or(0.0, |a| tol.get(tag).allowed(a.mean.get()));
    let delta = a
        .as_ref()
        .zip(b.as_ref())
        .map(|(a, b)| b.mean.get() - a.mean.get());
    let worse_by = match (dir.mode(), delta) {
        (Some(SelectMode::Max), Some(d)) => -d,
        (Some(SelectMode::Min), Some(d)) => d,
        _ => f64::NAN,
    };
    // A NaN mean in B (a diverged replicate) where A had a number is as bad as it gets.
    let b_lost = a.as_ref().is_some_and(|a| a.mean.get().is_finite())
        && b.as_ref().is_some_and(|b| !b.mean.get().is_finite());
    let beyond_tolerance = b_lost || worse_by > tolerance;
    let significant = b_lost || (beyond_tolerance && test.is_some_and(|t| t.p < ALPHA));
    let missing = a.is_some() && b.is_none();
    let regression = missing
        || match fail_on {
            FailOn::Any => beyond_tolerance,
            FailOn::Significant => significant,
        };
    MeanDiff {
        tag: tag.to_string(),
        a,
        b,
        delta: delta.map(Num),
        ci95: test.map(|t| [Num(t.ci95.low), Num(t.ci95.high)]),
        p: test.map(|t| Num(t.p)),
        direction: dir,
        tolerance: Num(tolerance),
        beyond_tolerance,
        significant,
        regression,
    }
}
