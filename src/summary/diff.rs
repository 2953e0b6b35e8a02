//! `orchestrate diff A B`: compare two summaries, metric by metric, with tolerances.
//!
//! A is the baseline and B the candidate. Runs are matched by name (by ID when a name is
//! missing or repeated). A metric regresses when B is worse than A by more than its tolerance
//! in the metric's direction (higher is better for accuracy-like tags, lower for loss and error
//! rates, the `select` mode for the select metric); tags with no known direction are reported
//! as changed but never fail. A run of A that is missing from B, or that finished in A and not
//! in B, is a regression too. Config differences are shown beside, never judged; so is a
//! changed `select` (the metrics are the same, only the rule that picks the winner moved).
//! Runs whose data fingerprints or numerics versions differ say so first, before any metric:
//! their metrics differ for that reason alone.
//! A tolerance for a tag neither side has is refused: a misspelt one would silently allow
//! nothing it was meant to. Non-finite values are judged by [`SelectMode::is_better`]: a NaN
//! or an infinity in B where A had a number (a `-inf` loss too: divergence, not a record) is
//! a regression, a number where A had none a fix.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::experiment::{ExperimentSummary, RunEntry, Selection, parse_summary, state_name};
use super::num::{Num, fmt_delta, fmt_metric};
use super::significance::{self, ConfigurationDiff, FailOn};
use super::{SummaryError, git, load_experiment, run};
use crate::spec::SelectMode;
use crate::store::RunState;

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Higher,
    Lower,
    /// Not known (e.g. `lr`): differences are shown, never counted as regressions.
    Unknown,
}

impl Direction {
    /// The select mode that judges "better" in this direction; `None` when unknown.
    pub fn mode(self) -> Option<SelectMode> {
        match self {
            Direction::Higher => Some(SelectMode::Max),
            Direction::Lower => Some(SelectMode::Min),
            Direction::Unknown => None,
        }
    }
}

/// The direction of `tag`: the select mode for the select metric, else read from its name.
pub fn direction(tag: &str, select: &Selection) -> Direction {
    let name = tag.rsplit('/').next().unwrap_or(tag).to_ascii_lowercase();
    let lower = ["loss", "error", "perplexity", "cer", "wer"];
    let higher = ["accuracy", "acc", "bleu", "f1", "precision", "recall"];
    let from_name = if lower.iter().any(|w| name.contains(w)) {
        Direction::Lower
    } else if higher.iter().any(|w| name.contains(w)) {
        Direction::Higher
    } else {
        Direction::Unknown
    };
    // `test/accuracy` follows `dev/accuracy`'s mode: same quantity, other split.
    let suffix = |t: &str| t.rsplit('/').next().unwrap_or(t).to_string();
    if tag == select.metric
        || (from_name == Direction::Unknown && suffix(tag) == suffix(&select.metric))
    {
        return match select.mode {
            SelectMode::Max => Direction::Higher,
            SelectMode::Min => Direction::Lower,
        };
    }
    from_name
}

/// A tolerance: absolute, or relative to the baseline value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum Tolerance {
    Absolute(f64),
    /// A fraction of `|A|` (`1%` is `0.01`).
    Relative(f64),
}

impl Tolerance {
    /// How much worse than `baseline` B may be.
    pub fn allowed(self, baseline: f64) -> f64 {
        match self {
            Tolerance::Absolute(t) => t,
            // A NaN or infinite baseline allows nothing rather than NaN or everything.
            Tolerance::Relative(r) if baseline.is_finite() => (baseline.abs() * r).abs(),
            Tolerance::Relative(_) => 0.0,
        }
    }
}

/// Tolerances per tag from `--tol TAG=VALUE` (`*` sets the default; 0 without one).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tolerances {
    by_tag: BTreeMap<String, Tolerance>,
    /// The `--tol` argument each tag came from, for errors.
    args: BTreeMap<String, String>,
    default: Option<Tolerance>,
}

impl Tolerances {
    /// Parses `dev/accuracy=0.005`, `dev/loss=1%`, `*=0.001`.
    pub fn parse(args: &[String]) -> Result<Self, SummaryError> {
        let mut t = Tolerances::default();
        for arg in args {
            let bad = |why: &str| {
                SummaryError::Usage(format!(
                    "--tol {arg}: {why} (expected TAG=VALUE or TAG=PERCENT%, e.g. dev/accuracy=0.005)"
                ))
            };
            let (tag, value) = arg.split_once('=').ok_or_else(|| bad("no `=`"))?;
            let tag = tag.trim();
            if tag.is_empty() {
                return Err(bad("empty tag"));
            }
            let value = value.trim();
            let tol = if let Some(p) = value.strip_suffix('%') {
                let p: f64 = p.trim().parse().map_err(|_| bad("not a number"))?;
                Tolerance::Relative(p / 100.0)
            } else {
                Tolerance::Absolute(value.parse().map_err(|_| bad("not a number"))?)
            };
            let v = match tol {
                Tolerance::Absolute(v) | Tolerance::Relative(v) => v,
            };
            if !v.is_finite() || v < 0.0 {
                return Err(bad("must be a finite number >= 0"));
            }
            if tag == "*" {
                t.default = Some(tol);
            } else {
                t.by_tag.insert(tag.to_string(), tol);
                t.args.insert(tag.to_string(), arg.clone());
            }
        }
        Ok(t)
    }

    /// Refuses a tolerance for a tag that is in none of `known` (the tags of A and B), with
    /// the nearest known tag as a suggestion.
    pub fn check_tags(&self, known: &BTreeSet<&str>) -> Result<(), SummaryError> {
        for (tag, arg) in &self.args {
            if known.contains(tag.as_str()) {
                continue;
            }
            let mut m = format!("--tol {arg}: no metric `{tag}` in A or B");
            let near = crate::spec::schema::closest(tag, known.iter().copied())
                .map(|s| vec![s])
                .unwrap_or_else(|| same_leaf(tag, known));
            if !near.is_empty() {
                let near: Vec<String> = near.iter().map(|s| format!("`{s}`")).collect();
                let _ = write!(m, "; did you mean {}?", near.join(" or "));
            }
            if known.is_empty() {
                m.push_str(" (they hold no metrics)");
            } else {
                let all: Vec<&str> = known.iter().copied().collect();
                let _ = write!(
                    m,
                    " (their tags: {}; `*=...` sets the default)",
                    all.join(", ")
                );
            }
            return Err(SummaryError::Usage(m));
        }
        Ok(())
    }

    /// The tolerance of `tag`.
    pub fn get(&self, tag: &str) -> Tolerance {
        self.by_tag
            .get(tag)
            .copied()
            .or(self.default)
            .unwrap_or(Tolerance::Absolute(0.0))
    }
}

/// Known tags whose last `/` segment is `tag`'s: `accuracy` may mean `dev/accuracy`.
fn same_leaf<'a>(tag: &str, known: &BTreeSet<&'a str>) -> Vec<&'a str> {
    let leaf = tag.rsplit('/').next().unwrap_or(tag);
    known
        .iter()
        .copied()
        .filter(|k| k.rsplit('/').next() == Some(leaf))
        .collect()
}

/// What happened to one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Same,
    Better,
    /// Worse, but within tolerance.
    Within,
    /// Worse beyond tolerance: a regression.
    Worse,
    /// Different, in a direction that is neither better nor worse.
    Changed,
    /// In A, not in B: a regression.
    Missing,
    /// In B only.
    New,
}

impl Verdict {
    /// True for the verdicts that fail `diff`.
    pub fn is_regression(self) -> bool {
        matches!(self, Verdict::Worse | Verdict::Missing)
    }
}

/// One metric of one run in A and B.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricDiff {
    pub tag: String,
    pub a: Option<Num>,
    pub b: Option<Num>,
    pub delta: Option<Num>,
    pub direction: Direction,
    /// The allowed worsening for this baseline value.
    pub tolerance: Num,
    pub verdict: Verdict,
}

/// One config key that differs between the runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigDiff {
    pub key: String,
    pub a: Option<serde_json::Value>,
    pub b: Option<serde_json::Value>,
}

/// One run of A, B or both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDiff {
    pub run: String,
    pub id_a: Option<String>,
    pub id_b: Option<String>,
    pub state_a: Option<String>,
    pub state_b: Option<String>,
    pub regression: bool,
    /// Run-level findings: missing in B, state changes.
    pub notes: Vec<String>,
    pub metrics: Vec<MetricDiff>,
    pub config: Vec<ConfigDiff>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffReport {
    pub a: String,
    pub b: String,
    pub regression: bool,
    /// How each side picked its winner; directions follow A's.
    pub select_a: Selection,
    pub select_b: Selection,
    /// `select_a != select_b`: the winners were picked by different rules. Reported, but not
    /// a regression by itself (`select` changes no metric value).
    pub select_changed: bool,
    pub winner_a: Option<String>,
    pub winner_b: Option<String>,
    /// Which worsening fails the diff.
    pub fail_on: FailOn,
    pub runs: Vec<RunDiff>,
    /// The configurations of replicates, when both sides have them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<ConfigurationDiff>,
}

/// Reads a diff input: a summary file, an experiment directory or `REV:PATH` from git.
pub fn load_input(arg: &str) -> Result<ExperimentSummary, SummaryError> {
    let path = Path::new(arg);
    if path.is_dir() {
        if !super::run_dirs(path)?.is_empty() {
            return Ok(load_experiment(path)?.0);
        }
        let file = path.join("summary.json");
        if file.is_file() {
            return parse_summary(&run::read_text(&file)?, &file);
        }
        return Err(SummaryError::NotFound(format!(
            "{arg}: neither an experiment directory with runs nor one with a summary.json"
        )));
    }
    if path.exists() {
        return parse_summary(&run::read_text(path)?, path);
    }
    if arg.contains(':') {
        return parse_summary(&git::show(arg)?, path);
    }
    Err(SummaryError::NotFound(format!(
        "{arg}: no such file or directory (for a committed file write REV:PATH, e.g. HEAD~1:{arg})"
    )))
}

/// Compares baseline `a` with candidate `b`; a tolerance for a tag neither has is an error.
/// `fail_on` defaults to [`significance::default_fail_on`]; `significant` needs replicates
/// on both sides.
pub fn diff(
    a_label: &str,
    a: &ExperimentSummary,
    b_label: &str,
    b: &ExperimentSummary,
    tol: &Tolerances,
    fail_on: Option<FailOn>,
) -> Result<DiffReport, SummaryError> {
    let fail_on = fail_on.unwrap_or_else(|| significance::default_fail_on(a, b));
    if fail_on == FailOn::Significant {
        for (label, s) in [(a_label, a), (b_label, b)] {
            if s.configurations.is_empty() {
                return Err(SummaryError::Usage(format!(
                    "--fail-on significant: {label} has no replicates (repeats >= 2) to test; \
                     use --fail-on any"
                )));
            }
        }
    }
    let tags: BTreeSet<String> = a
        .all_runs()
        .chain(b.all_runs())
        .flat_map(|r| flat_metrics(r).into_keys())
        .collect();
    tol.check_tags(&tags.iter().map(String::as_str).collect())?;
    let a_runs: Vec<&RunEntry> = a.all_runs().collect();
    let b_runs: Vec<&RunEntry> = b.all_runs().collect();
    let mut used = vec![false; b_runs.len()];
    let mut runs = Vec::new();
    for ra in &a_runs {
        let found = match_run(ra, &a_runs, &b_runs, &used);
        if let Some(j) = found {
            used[j] = true;
        }
        runs.push(compare_run(ra, found.map(|j| b_runs[j]), &a.select, tol));
    }
    for (_, rb) in b_runs.iter().enumerate().filter(|(j, _)| !used[*j]) {
        runs.push(RunDiff {
            run: rb.label().to_string(),
            id_a: None,
            id_b: Some(rb.id.clone()),
            state_a: None,
            state_b: Some(state_name(rb.state)),
            regression: false,
            notes: vec!["new in B".into()],
            metrics: Vec::new(),
            config: Vec::new(),
        });
    }
    let label = |s: &ExperimentSummary| s.winner_entry().map(|w| w.label().to_string());
    let configurations = significance::compare(a, b, tol, fail_on);
    // Under `significant` one replicate's numbers are noise: only configurations fail.
    let regression = configurations.iter().any(|c| c.regression)
        || (fail_on == FailOn::Any && runs.iter().any(|r| r.regression));
    Ok(DiffReport {
        a: a_label.to_string(),
        b: b_label.to_string(),
        regression,
        select_a: a.select.clone(),
        select_b: b.select.clone(),
        select_changed: a.select != b.select,
        winner_a: label(a),
        winner_b: label(b),
        fail_on,
        runs,
        configurations,
    })
}

/// The run of B matching `ra`: same name when the name is unique on both sides, else same ID.
fn match_run(
    ra: &RunEntry,
    a_runs: &[&RunEntry],
    b_runs: &[&RunEntry],
    used: &[bool],
) -> Option<usize> {
    let unique =
        |runs: &[&RunEntry], name: &str| runs.iter().filter(|r| r.name == name).count() == 1;
    if !ra.name.is_empty()
        && unique(a_runs, &ra.name)
        && unique(b_runs, &ra.name)
        && let Some(j) = b_runs.iter().position(|rb| rb.name == ra.name)
        && !used[j]
    {
        return Some(j);
    }
    b_runs
        .iter()
        .enumerate()
        .find(|(j, rb)| !used[*j] && rb.id == ra.id)
        .map(|(j, _)| j)
}

fn compare_run(
    ra: &RunEntry,
    rb: Option<&RunEntry>,
    select: &Selection,
    tol: &Tolerances,
) -> RunDiff {
    let Some(rb) = rb else {
        return RunDiff {
            run: ra.label().to_string(),
            id_a: Some(ra.id.clone()),
            id_b: None,
            state_a: Some(state_name(ra.state)),
            state_b: None,
            regression: true,
            notes: vec!["missing in B".into()],
            metrics: Vec::new(),
            config: Vec::new(),
        };
    };
    // Before any metric: results of other data or numerics differ for that reason alone.
    let mut notes = identity_notes(ra, rb);
    let mut regression = false;
    if ra.state != rb.state {
        notes.push(format!(
            "state {} -> {}",
            state_name(ra.state),
            state_name(rb.state)
        ));
        if ra.state == Some(RunState::Done) {
            regression = true;
        }
    }
    let (ma, mb) = (flat_metrics(ra), flat_metrics(rb));
    let tags: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    let metrics: Vec<MetricDiff> = tags
        .into_iter()
        .map(|tag| compare_metric(tag, ma.get(tag).copied(), mb.get(tag).copied(), select, tol))
        .collect();
    regression |= metrics.iter().any(|m| m.verdict.is_regression());
    RunDiff {
        run: ra.label().to_string(),
        id_a: Some(ra.id.clone()),
        id_b: Some(rb.id.clone()),
        state_a: Some(state_name(ra.state)),
        state_b: Some(state_name(rb.state)),
        regression,
        notes,
        metrics,
        config: config_diff(&ra.config, &rb.config),
    }
}

/// What differs between the two runs' identities beyond their configs: the data files (by
/// role) and the numerics version, where both sides recorded them.
pub fn identity_notes(ra: &RunEntry, rb: &RunEntry) -> Vec<String> {
    use crate::grid::identity::DataFingerprint;
    let mut notes = Vec::new();
    if let (Some(DataFingerprint::Files(a)), Some(DataFingerprint::Files(b))) = (&ra.data, &rb.data)
    {
        let changed: Vec<&str> = a
            .keys()
            .chain(b.keys().filter(|k| !a.contains_key(*k)))
            .filter(|k| a.get(*k) != b.get(*k))
            .map(String::as_str)
            .collect();
        if !changed.is_empty() {
            notes.push(format!("data fingerprint differs: {}", changed.join(", ")));
        }
    }
    if let (Some(a), Some(b)) = (ra.numerics, rb.numerics)
        && a != b
    {
        notes.push(format!("numerics version {a} -> {b}"));
    }
    notes
}

/// The metrics `diff` compares: last-epoch values of every tag, and the test values.
fn flat_metrics(r: &RunEntry) -> BTreeMap<String, Num> {
    let mut m = r.metrics.last.clone();
    m.extend(r.metrics.test.iter().map(|(k, v)| (k.clone(), *v)));
    m
}

/// Judges one metric.
pub fn compare_metric(
    tag: &str,
    a: Option<Num>,
    b: Option<Num>,
    select: &Selection,
    tol: &Tolerances,
) -> MetricDiff {
    let dir = direction(tag, select);
    let allowed = a.map_or(0.0, |a| tol.get(tag).allowed(a.get()));
    let verdict = match (a, b) {
        (Some(_), None) => Verdict::Missing,
        (None, _) => Verdict::New,
        (Some(a), Some(b)) if a == b => Verdict::Same,
        (Some(a), Some(b)) => match dir.mode() {
            None => Verdict::Changed,
            Some(mode) => {
                let (a, b) = (a.get(), b.get());
                if a.is_finite() && b.is_finite() {
                    let worse_by = if mode == SelectMode::Max {
                        a - b
                    } else {
                        b - a
                    };
                    if worse_by > allowed {
                        Verdict::Worse
                    } else if mode.is_better(a, b) {
                        Verdict::Within
                    } else {
                        Verdict::Better
                    }
                } else if mode.is_better(b, a) {
                    // A real value where A had a NaN or diverged: a fix.
                    Verdict::Better
                } else if mode.is_better(a, b) {
                    // A NaN or an infinity (a `-inf` loss too) where A had a real value: as
                    // bad as it gets, whatever the tolerance.
                    Verdict::Worse
                } else {
                    // Neither side has a real value (say NaN and inf): no record to judge.
                    Verdict::Changed
                }
            }
        },
    };
    MetricDiff {
        tag: tag.to_string(),
        a,
        b,
        delta: a.zip(b).map(|(a, b)| {
            if a == b {
                Num(0.0)
            } else {
                Num(b.get() - a.get())
            }
        }),
        direction: dir,
        tolerance: Num(allowed),
        verdict,
    }
}

/// Config keys whose values differ; identity-free keys (`name`, `description`, `launch`) are
/// left out because they never change what a run computes.
pub fn config_diff(a: &serde_json::Value, b: &serde_json::Value) -> Vec<ConfigDiff> {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten("", a, &mut fa);
    flatten("", b, &mut fb);
    let keys: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    keys.into_iter()
        .filter(|k| {
            let top = k.split('.').next().unwrap_or(k);
            !matches!(top, "name" | "description" | "launch")
        })
        .filter(|k| fa.get(*k) != fb.get(*k))
        .map(|k| ConfigDiff {
            key: k.clone(),
            a: fa.get(k).cloned(),
            b: fb.get(k).cloned(),
        })
        .collect()
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

fn show_num(n: Option<Num>) -> String {
    n.map_or("-".into(), |n| fmt_metric(n.get()))
}

pub(super) fn show_json(v: &Option<serde_json::Value>) -> String {
    super::experiment::show_value(v.as_ref())
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Same => "same",
        Verdict::Better => "better",
        Verdict::Within => "within tolerance",
        Verdict::Worse => "REGRESSION",
        Verdict::Changed => "changed",
        Verdict::Missing => "MISSING in B",
        Verdict::New => "new in B",
    }
}

impl DiffReport {
    /// The headline: whether the diff passes.
    pub fn headline(&self) -> String {
        if !self.configurations.is_empty() {
            return self.configuration_headline();
        }
        let bad = self.runs.iter().filter(|r| r.regression).count();
        if bad == 0 {
            format!("OK: {} run(s) within tolerance", self.runs.len())
        } else {
            format!(
                "REGRESSION: {bad} of {} run(s) worse beyond tolerance",
                self.runs.len()
            )
        }
    }

    /// The headline over configurations, naming the first failing metric with n, p and effect.
    fn configuration_headline(&self) -> String {
        let n = self.configurations.len();
        let rule = significance::fail_rule(self.fail_on, "Welch");
        let bad: Vec<&ConfigurationDiff> = self
            .configurations
            .iter()
            .filter(|c| c.regression)
            .collect();
        let Some(first) = bad.first() else {
            return format!("OK: no configuration of {n} {rule}");
        };
        let what = first
            .metrics
            .iter()
            .find(|m| m.regression)
            .map_or_else(|| first.notes.join("; "), |m| m.describe());
        format!(
            "REGRESSION: {} of {n} configuration(s) {rule}; {}: {what}",
            bad.len(),
            first.configuration
        )
    }

    /// The selection line, only when it changed: the winners are then not comparable.
    fn select_text(&self) -> Option<String> {
        let show = |s: &Selection| {
            let mode = match s.mode {
                SelectMode::Max => "max",
                SelectMode::Min => "min",
            };
            format!("{} ({mode})", s.metric)
        };
        self.select_changed.then(|| {
            format!(
                "select CHANGED: {} -> {}; the winners were picked by different rules, and \
                 metric directions follow A's (not a regression by itself)",
                show(&self.select_a),
                show(&self.select_b)
            )
        })
    }

    fn winner_text(&self) -> String {
        let w = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
        if self.winner_a == self.winner_b {
            format!("winner: {} (unchanged)", w(&self.winner_a))
        } else {
            format!("winner: {} -> {}", w(&self.winner_a), w(&self.winner_b))
        }
    }

    /// Aligned plain-text tables for the terminal; every metric is listed.
    pub fn to_table(&self) -> String {
        let mut out = format!("A: {}\nB: {}\n", self.a, self.b);
        if let Some(s) = self.select_text() {
            let _ = writeln!(out, "{s}");
        }
        let _ = writeln!(out, "{}\n{}", self.winner_text(), self.headline());
        if !self.configurations.is_empty() {
            out.push_str(&self.configurations_table());
        }
        for r in &self.runs {
            let id = r
                .id_b
                .as_ref()
                .or(r.id_a.as_ref())
                .cloned()
                .unwrap_or_default();
            let _ = write!(out, "\nrun {} ({id})", r.run);
            for n in &r.notes {
                let _ = write!(out, "; {n}");
            }
            out.push('\n');
            let mut rows = vec![vec![
                "metric".to_string(),
                "A".into(),
                "B".into(),
                "delta".into(),
                "tol".into(),
                "verdict".into(),
            ]];
            for m in &r.metrics {
                rows.push(vec![
                    m.tag.clone(),
                    show_num(m.a),
                    show_num(m.b),
                    m.delta.map_or("-".into(), |d| fmt_delta(d.get())),
                    fmt_metric(m.tolerance.get()),
                    verdict_word(m.verdict).into(),
                ]);
            }
            if r.metrics.is_empty() {
                rows.clear();
            }
            for c in &r.config {
                rows.push(vec![
                    format!("config {}", c.key),
                    show_json(&c.a),
                    show_json(&c.b),
                    String::new(),
                    String::new(),
                    "changed".into(),
                ]);
            }
            out.push_str(&align(&rows, "  "));
        }
        out
    }

    /// The configurations block of the table: means with n, the difference with its interval,
    /// Welch's p and the verdict.
    fn configurations_table(&self) -> String {
        let mut rows = vec![
            [
                "configuration",
                "metric",
                "A mean",
                "B mean",
                "delta",
                "95% CI",
                "p",
                "verdict",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for c in &self.configurations {
            if c.metrics.is_empty() {
                let mut row = vec![String::new(); 8];
                row[0] = c.configuration.clone();
                row[7] = c.notes.join("; ");
                rows.push(row);
            }
            for m in &c.metrics {
                let mut row = vec![c.configuration.clone(), m.tag.clone()];
                row.extend(m.cells());
                row.push(m.verdict().into());
                rows.push(row);
            }
        }
        format!("\nconfigurations\n{}", align(&rows, "  "))
    }

    /// The configurations as a Markdown table: every metric, since a mean moves with any
    /// replicate and the reader needs the noise to judge the difference.
    fn configurations_markdown(&self) -> String {
        let mut md = String::from(
            "| configuration | metric | A mean | B mean | Δ | 95% CI | p | verdict |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n",
        );
        for c in &self.configurations {
            if c.metrics.is_empty() {
                let _ = writeln!(
                    md,
                    "| {} | | | | | | | {} |",
                    c.configuration,
                    c.notes.join("; ")
                );
            }
            for m in &c.metrics {
                let _ = writeln!(md, "| {} | {} |", c.configuration, m.markdown_cells());
            }
        }
        md.push('\n');
        md
    }

    /// Markdown for a pull-request comment: the verdict, then only what moved.
    pub fn to_markdown(&self) -> String {
        let icon = if self.regression { "❌" } else { "✅" };
        let mut md = format!("### {icon} orchestrate diff: {}\n\n", self.headline());
        let _ = write!(md, "- A (baseline): `{}`\n- B: `{}`\n", self.a, self.b);
        if let Some(s) = self.select_text() {
            let _ = writeln!(md, "- **{s}**");
        }
        let _ = writeln!(md, "- {}\n", self.winner_text());
        if !self.configurations.is_empty() {
            md.push_str(&self.configurations_markdown());
        }
        let moved: Vec<(&RunDiff, &MetricDiff)> = self
            .runs
            .iter()
            .flat_map(|r| r.metrics.iter().map(move |m| (r, m)))
            .filter(|(_, m)| m.verdict != Verdict::Same)
            .collect();
        let same = self.runs.iter().flat_map(|r| &r.metrics).count() - moved.len();
        if !moved.is_empty() {
            md.push_str("| run | metric | A | B | Δ | tolerance | verdict |\n");
            md.push_str("| --- | --- | ---: | ---: | ---: | ---: | --- |\n");
            for (r, m) in &moved {
                let verdict = if m.verdict.is_regression() {
                    format!("**{}**", verdict_word(m.verdict))
                } else {
                    verdict_word(m.verdict).to_string()
                };
                let _ = writeln!(
                    md,
                    "| {} | `{}` | {} | {} | {} | {} | {} |",
                    r.run,
                    m.tag,
                    show_num(m.a),
                    show_num(m.b),
                    m.delta.map_or("-".into(), |d| fmt_delta(d.get())),
                    fmt_metric(m.tolerance.get()),
                    verdict
                );
            }
            md.push('\n');
        }
        let _ = writeln!(md, "{same} metric value(s) identical.\n");
        let notes: Vec<&RunDiff> = self.runs.iter().filter(|r| !r.notes.is_empty()).collect();
        if !notes.is_empty() {
            md.push_str("**Runs**\n\n");
            for r in notes {
                let mark = if r.regression { " (regression)" } else { "" };
                let _ = writeln!(md, "- {}: {}{mark}", r.run, r.notes.join("; "));
            }
            md.push('\n');
        }
        let configs: Vec<(Option<&str>, &ConfigDiff)> = self
            .runs
            .iter()
            .flat_map(|r| r.config.iter().map(move |c| (Some(r.run.as_str()), c)))
            .collect();
        md.push_str(&config_markdown(&configs));
        md
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        pretty_json(self)
    }
}

/// The "Config differences" block of a Markdown diff, each row under its run when `Some`;
/// empty without rows.
pub(super) fn config_markdown(rows: &[(Option<&str>, &ConfigDiff)]) -> String {
    let Some((first, _)) = rows.first() else {
        return String::new();
    };
    let mut md = String::from("**Config differences**\n\n");
    md.push_str(if first.is_some() {
        "| run | key | A | B |\n| --- | --- | --- | --- |\n"
    } else {
        "| key | A | B |\n| --- | --- | --- |\n"
    });
    for (run, c) in rows {
        let run = run.map(|r| format!("| {r} ")).unwrap_or_default();
        let _ = writeln!(
            md,
            "{run}| `{}` | {} | {} |",
            c.key,
            show_json(&c.a),
            show_json(&c.b)
        );
    }
    md.push('\n');
    md
}

/// `value` as pretty JSON with a trailing newline.
pub(super) fn pretty_json<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    Ok(s)
}

/// Left-aligned columns separated by `sep`.
pub(super) fn align(rows: &[Vec<String>], sep: &str) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for (c, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < r.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count()));
                line.push_str(sep);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(metric: &str, mode: SelectMode) -> Selection {
        Selection {
            metric: metric.into(),
            mode,
            rank: Default::default(),
        }
    }

    #[test]
    fn identity_notes_name_the_changed_data_files_and_the_numerics_versions() {
        use crate::grid::identity::DataFingerprint;
        let entry = |train: &str, numerics: u32| -> RunEntry {
            serde_json::from_value(serde_json::json!({
                "rank": null, "winner": false, "id": "a", "name": "n", "index": 0,
                "state": null, "attempts": 0, "varied": {}, "config": {},
                "metrics": {"select": "dev/accuracy", "mode": "max", "best_epoch": null,
                            "best": null, "final": {}, "test": {}, "epochs": []},
                "data": DataFingerprint::Files(
                    [("train".to_string(), train.to_string())].into()
                ),
                "numerics": numerics,
            }))
            .unwrap()
        };
        assert!(identity_notes(&entry("x", 1), &entry("x", 1)).is_empty());
        assert_eq!(
            identity_notes(&entry("x", 1), &entry("y", 2)),
            ["data fingerprint differs: train", "numerics version 1 -> 2"]
        );
    }

    #[test]
    fn direction_comes_from_the_select_mode_then_the_tag_name() {
        let acc = sel("dev/accuracy", SelectMode::Max);
        assert_eq!(direction("dev/accuracy", &acc), Direction::Higher);
        assert_eq!(direction("test/accuracy", &acc), Direction::Higher);
        assert_eq!(direction("train/loss", &acc), Direction::Lower);
        assert_eq!(direction("test/error_rate", &acc), Direction::Lower);
        assert_eq!(direction("lr", &acc), Direction::Unknown);
        let custom = sel("dev/score", SelectMode::Min);
        assert_eq!(direction("dev/score", &custom), Direction::Lower);
        assert_eq!(direction("test/score", &custom), Direction::Lower);
    }

    #[test]
    fn tolerances_parse_absolute_relative_and_default() {
        let t = Tolerances::parse(&[
            "dev/accuracy=0.005".into(),
            "dev/loss=2%".into(),
            "*=1e-6".into(),
        ])
        .unwrap();
        assert_eq!(t.get("dev/accuracy"), Tolerance::Absolute(0.005));
        assert_eq!(t.get("dev/loss"), Tolerance::Relative(0.02));
        assert_eq!(t.get("train/loss"), Tolerance::Absolute(1e-6));
        assert_eq!(Tolerances::default().get("x"), Tolerance::Absolute(0.0));
        for bad in ["dev/accuracy", "=1", "x=abc", "x=-1", "x=inf%"] {
            assert!(
                Tolerances::parse(&[bad.into()]).is_err(),
                "{bad} was accepted"
            );
        }
        assert_eq!(Tolerance::Relative(0.1).allowed(-2.0), 0.2);
        assert_eq!(Tolerance::Relative(0.1).allowed(f64::NAN), 0.0);
    }

    #[test]
    fn a_tolerance_for_an_unknown_tag_is_refused_with_the_nearest_tag() {
        let known: BTreeSet<&str> = ["dev/accuracy", "test/accuracy", "train/loss"].into();
        let err = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            Tolerances::parse(&args)
                .unwrap()
                .check_tags(&known)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(err(&["dev/accuracy=0.1", "*=1"]), None);
        let typo = err(&["dev/acuracy=0.1"]).unwrap();
        assert!(typo.starts_with("--tol dev/acuracy=0.1: no metric `dev/acuracy` in A or B; did you mean `dev/accuracy`?"), "{typo}");
        let leaf = err(&["accuracy=1%"]).unwrap();
        assert!(
            leaf.contains("did you mean `dev/accuracy` or `test/accuracy`?"),
            "{leaf}"
        );
        let far = err(&["bleu=1"]).unwrap();
        assert!(!far.contains("did you mean"), "{far}");
        assert!(
            far.contains("their tags: dev/accuracy, test/accuracy, train/loss"),
            "{far}"
        );
        let none = Tolerances::parse(&["x=1".into()])
            .unwrap()
            .check_tags(&BTreeSet::new());
        assert!(
            none.unwrap_err()
                .to_string()
                .contains("they hold no metrics")
        );
    }

    #[test]
    fn verdicts_follow_direction_and_tolerance() {
        let s = sel("dev/accuracy", SelectMode::Max);
        let t = Tolerances::parse(&["*=0.01".into()]).unwrap();
        let v = |tag: &str, a: Option<f64>, b: Option<f64>| {
            compare_metric(tag, a.map(Num), b.map(Num), &s, &t).verdict
        };
        assert_eq!(v("dev/accuracy", Some(0.8), Some(0.8)), Verdict::Same);
        assert_eq!(v("dev/accuracy", Some(0.8), Some(0.795)), Verdict::Within);
        assert_eq!(v("dev/accuracy", Some(0.8), Some(0.78)), Verdict::Worse);
        assert_eq!(v("dev/accuracy", Some(0.8), Some(0.9)), Verdict::Better);
        assert_eq!(v("dev/loss", Some(0.5), Some(0.52)), Verdict::Worse);
        assert_eq!(v("dev/loss", Some(0.5), Some(0.3)), Verdict::Better);
        assert_eq!(v("dev/loss", Some(0.5), Some(f64::NAN)), Verdict::Worse);
        assert_eq!(v("dev/loss", Some(f64::NAN), Some(0.5)), Verdict::Better);
        assert_eq!(v("dev/loss", Some(f64::NAN), Some(f64::NAN)), Verdict::Same);
        // A loss or error rate of `-inf` (or an accuracy of `+inf`) is divergence, not a
        // record: main counted these as improvements.
        let ninf = f64::NEG_INFINITY;
        assert_eq!(v("dev/loss", Some(0.5), Some(ninf)), Verdict::Worse);
        assert_eq!(v("dev/error_rate", Some(0.5), Some(ninf)), Verdict::Worse);
        assert_eq!(
            v("dev/accuracy", Some(0.8), Some(f64::INFINITY)),
            Verdict::Worse
        );
        assert_eq!(
            v("dev/loss", Some(0.5), Some(f64::INFINITY)),
            Verdict::Worse
        );
        assert_eq!(v("dev/loss", Some(ninf), Some(0.5)), Verdict::Better);
        assert_eq!(v("dev/loss", Some(ninf), Some(f64::NAN)), Verdict::Changed);
        assert_eq!(v("dev/loss", Some(ninf), Some(ninf)), Verdict::Same);
        assert_eq!(v("lr", Some(0.1), Some(0.2)), Verdict::Changed);
        assert_eq!(v("dev/loss", Some(0.5), None), Verdict::Missing);
        assert_eq!(v("dev/loss", None, Some(0.5)), Verdict::New);
    }

    #[test]
    fn config_diff_lists_changed_keys_but_not_names_or_launch() {
        let a = serde_json::json!({"name": "a", "launch": {"jobs": 1}, "optimizer": {"lr": 0.1, "kind": "adam"}});
        let b = serde_json::json!({"name": "b", "launch": {"jobs": 4}, "optimizer": {"lr": 0.2, "kind": "adam"}});
        let d = config_diff(&a, &b);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].key, "optimizer.lr");
    }
}
