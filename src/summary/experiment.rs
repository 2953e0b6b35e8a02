//! The experiment summary: every run ranked by the select metric, the winner, the runs set
//! apart, and its two written forms (`summary.json` for machines and `diff`, `summary.md` for
//! people).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::SummaryError;
use super::configurations::{Confidence, ConfigurationEntry, Stat, configurations};
use super::num::fmt_metric;
use super::run::{MetricsSection, RunSummary};
use super::select::{Candidate, rank};
use crate::spec::{SelectMode, SelectRank, SelectSpec};
use crate::store::RunState;

/// Version of the experiment `summary.json` layout.
pub const FORMAT: u32 = 1;

/// How the winner was picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub metric: String,
    pub mode: SelectMode,
    /// How configurations of replicates are ranked.
    #[serde(default, skip_serializing_if = "SelectRank::is_mean")]
    pub rank: SelectRank,
}

/// One run as the experiment summary lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    /// 1-based place in the ranking; `None` for runs set apart.
    pub rank: Option<usize>,
    pub winner: bool,
    /// Why the run cannot win; only for runs set apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub id: String,
    pub name: String,
    pub index: usize,
    pub state: Option<RunState>,
    /// Why a finished run's records are damaged; such a run is set apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
    /// Why the run's results no longer match the current data or numerics; such a run is set
    /// apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
    pub attempts: u32,
    /// The data fingerprint the run was planned with, when known (`diff` compares it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<crate::grid::identity::DataFingerprint>,
    /// The numerics version the run was planned under, when known (`diff` compares it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerics: Option<u32>,
    /// Which replicate the run is of its configuration; absent for a spec without repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate: Option<super::run::Replicate>,
    pub varied: BTreeMap<String, serde_json::Value>,
    pub metrics: MetricsSection,
    /// The run's resolved config, so `diff` can show what changed beside what moved.
    pub config: serde_json::Value,
}

impl RunEntry {
    /// The run's name, or its ID when it has none.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }

    /// The configuration the run belongs to: its replicates' shared ID, or the run's own ID
    /// when it is the only run of its configuration. Grouping runs by this is the one rule.
    pub fn configuration(&self) -> &str {
        self.replicate
            .as_ref()
            .map_or(&self.id, |r| &r.configuration)
    }
}

/// `runs/<experiment>/summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSummary {
    pub format: u32,
    pub experiment: String,
    pub select: Selection,
    /// ID of the winning run.
    pub winner: Option<String>,
    /// Runs that qualified, best first.
    pub runs: Vec<RunEntry>,
    /// Failed, diverged, cancelled and unfinished runs, and runs without the select metric.
    pub excluded: Vec<RunEntry>,
    /// The configurations of replicates, best first; empty without `repeats`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<ConfigurationEntry>,
    /// Whether the best configuration is told apart from the runner-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
}

impl ExperimentSummary {
    /// Ranks loaded runs into an experiment summary.
    pub fn from_runs(experiment: &str, select: &SelectSpec, runs: &[RunSummary]) -> Self {
        let candidates: Vec<Candidate> = runs
            .iter()
            .map(|r| Candidate {
                index: r.run.index,
                id: r.run.id.clone(),
                state: r.run.state,
                score: r.metrics.best.map(|n| n.get()),
                damaged: r.run.damaged.clone(),
                stale: r.run.stale.clone(),
            })
            .collect();
        let ranking = rank(&candidates, &select.metric, select.mode);
        let mut winner = ranking.winner();
        let mut ranked: Vec<RunEntry> = ranking
            .ranked
            .iter()
            .enumerate()
            .map(|(place, &i)| entry(&runs[i], Some(place + 1), winner == Some(i), None))
            .collect();
        let excluded = ranking
            .excluded
            .iter()
            .map(|(i, reason)| {
                // A failed or diverged run says why in its status; keep that beside the state.
                let reason = match &runs[*i].run.message {
                    Some(m) if !m.is_empty() => format!("{reason}: {m}"),
                    _ => reason.clone(),
                };
                entry(&runs[*i], None, false, Some(reason))
            })
            .collect::<Vec<_>>();
        let (configurations, confidence) =
            configurations(&ranked, &excluded, select.mode, select.rank);
        if !configurations.is_empty() {
            // With replicates the winner is a configuration; its best replicate stands for it
            // where one run is needed (its checkpoint, `report`).
            let best = configurations.iter().find(|c| c.winner);
            winner = best.and_then(|c| {
                ranking.ranked.iter().copied().find(|&i| {
                    runs[i]
                        .run
                        .replicate
                        .as_ref()
                        .is_some_and(|r| r.configuration == c.id)
                })
            });
            for r in &mut ranked {
                r.winner = winner.is_some_and(|w| runs[w].run.id == r.id);
            }
        }
        ExperimentSummary {
            format: FORMAT,
            experiment: experiment.to_string(),
            select: Selection {
                metric: select.metric.clone(),
                mode: select.mode,
                rank: select.rank,
            },
            winner: winner.map(|i| runs[i].run.id.clone()),
            runs: ranked,
            excluded,
            configurations,
            confidence,
        }
    }

    /// The winning run's entry.
    pub fn winner_entry(&self) -> Option<&RunEntry> {
        self.runs.iter().find(|r| r.winner)
    }

    /// Every run: ranked ones first, then the ones set apart.
    pub fn all_runs(&self) -> impl Iterator<Item = &RunEntry> {
        self.runs.iter().chain(self.excluded.iter())
    }

    /// One line naming the winner, its select metric and its test metrics.
    ///
    /// `best: adam-lr0.0005 (3f2a1b9c0d11) dev/accuracy=0.8712 test/accuracy=0.8650`
    pub fn winner_line(&self) -> String {
        if !self.configurations.is_empty() {
            return self.configuration_line();
        }
        let Some(w) = self.winner_entry() else {
            return format!(
                "best: none: no finished run of `{}` has a finite {}",
                self.experiment, self.select.metric
            );
        };
        let mut line = if w.name.is_empty() {
            format!("best: {}", w.id)
        } else {
            format!("best: {} ({})", w.name, w.id)
        };
        if let Some(v) = w.metrics.best {
            let _ = write!(line, " {}={}", self.select.metric, fmt_metric(v.get()));
        }
        for (tag, v) in &w.metrics.test {
            let _ = write!(line, " {tag}={}", fmt_metric(v.get()));
        }
        if let Some(epoch) = w.metrics.test_epoch {
            let _ = write!(line, " test_epoch={epoch}");
        }
        line
    }

    /// The winning configuration with its means and intervals, and whether it is told apart
    /// from the runner-up.
    ///
    /// `best: lr0.0005 (configuration 1a2b3c4d5e6f, 5 replicates) dev/accuracy=0.8590 ± 0.0021 ...`
    fn configuration_line(&self) -> String {
        let Some(c) = self.configurations.iter().find(|c| c.winner) else {
            return format!(
                "best: none: no configuration of `{}` has every replicate finished with a finite {}",
                self.experiment, self.select.metric
            );
        };
        let label = if c.name.is_empty() { &c.id } else { &c.name };
        let mut line = format!(
            "best: {label} (configuration {}, {} replicates)",
            c.id,
            c.runs.len()
        );
        if let Some(s) = &c.select {
            let _ = write!(line, " {}={}", self.select.metric, s.show());
        }
        for (tag, s) in &c.test {
            let _ = write!(line, " {tag}={}", s.show());
        }
        if let Some(conf) = &self.confidence {
            line.push_str(&self.confidence_text(conf));
        }
        line
    }

    /// `; not distinguishable from lr0.001 (intervals overlap, Welch p=0.31)` or the
    /// distinguishable counterpart.
    fn confidence_text(&self, conf: &Confidence) -> String {
        let other = self
            .configurations
            .iter()
            .find(|c| c.id == conf.runner_up)
            .map_or(conf.runner_up.as_str(), |c| {
                if c.name.is_empty() { &c.id } else { &c.name }
            });
        let p = conf.welch_p.map_or(String::new(), |p| {
            format!(", Welch {}", super::num::p_clause(p.get()))
        });
        if conf.distinguishable {
            format!("; better than {other} with 95% confidence (intervals apart{p})")
        } else {
            let why = if conf.overlap {
                "intervals overlap"
            } else {
                "Welch p above 0.05"
            };
            format!("; NOT distinguishable from {other} ({why}{p})")
        }
    }

    /// The configurations section of `summary.md`: the verdict, then every configuration's
    /// means and intervals.
    fn configurations_markdown(&self, md: &mut String) {
        let metric = &self.select.metric;
        let by = match self.select.rank {
            SelectRank::Mean => "the mean",
            SelectRank::LowerBound => "the pessimistic end of the 95% interval of the mean",
        };
        let _ = writeln!(
            md,
            "Configurations are ranked by {by} of `{metric}` over their replicates; a \
             configuration counts only when every replicate finished. Intervals are 95% \
             Student-t intervals of the mean.\n"
        );
        let _ = writeln!(md, "**{}**\n", self.configuration_line());
        let tests: BTreeSet<&String> = self
            .configurations
            .iter()
            .flat_map(|c| c.test.keys())
            .collect();
        md.push_str("## Configurations\n\n| rank | configuration | id | n |");
        let _ = write!(md, " {metric} mean | 95% interval | sd |");
        for t in &tests {
            let _ = write!(md, " {t} |");
        }
        md.push_str(" reason |\n| ---: | --- | --- | ---: | ---: | --- | ---: |");
        md.push_str(&" ---: |".repeat(tests.len()));
        md.push_str(" --- |\n");
        for c in &self.configurations {
            let rank = c.rank.map_or(String::new(), |n| n.to_string());
            let label = if c.name.is_empty() { &c.id } else { &c.name };
            let name = if c.winner {
                format!("**{label}** (best)")
            } else {
                label.clone()
            };
            let (n, mean, interval, sd) = match &c.select {
                Some(s) => (
                    s.n.to_string(),
                    fmt_metric(s.mean.get()),
                    s.ci95.map_or("-".into(), |[l, h]| {
                        format!("[{}, {}]", fmt_metric(l.get()), fmt_metric(h.get()))
                    }),
                    s.sd.map_or("-".into(), |v| fmt_metric(v.get())),
                ),
                None => ("0".into(), "-".into(), "-".into(), "-".into()),
            };
            let _ = write!(
                md,
                "| {rank} | {name} | `{}` | {n} | {mean} | {interval} | {sd} |",
                c.id
            );
            for t in &tests {
                let _ = write!(md, " {} |", c.test.get(*t).map_or("-".into(), Stat::show));
            }
            let _ = writeln!(md, " {} |", c.reason.as_deref().unwrap_or(""));
        }
        md.push('\n');
    }

    /// Canonical JSON: fixed key order, canonical floats, trailing newline.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    /// `summary.md`: the ranking, the winner with its test metrics, the runs set apart.
    pub fn to_markdown(&self) -> String {
        let mode = match self.select.mode {
            SelectMode::Max => "higher is better",
            SelectMode::Min => "lower is better",
        };
        let metric = &self.select.metric;
        let mut md = format!("# Experiment `{}`\n\n", self.experiment);
        let _ = writeln!(
            md,
            "Runs are ranked by `{metric}` ({mode}) at each run's best epoch; ties go to the \
             lower grid index, then the lower run ID. Only finished runs take part.\n"
        );
        match self.winner_entry() {
            _ if !self.configurations.is_empty() => self.configurations_markdown(&mut md),
            Some(w) => {
                let _ = writeln!(md, "**Winner: {}** (`{}`)\n", w.label(), w.id);
                let _ = writeln!(md, "| metric | value |\n| --- | --- |");
                if let Some(v) = w.metrics.best {
                    let epoch = w.metrics.best_epoch.unwrap_or(0);
                    let _ = writeln!(md, "| {metric} (epoch {epoch}) | {} |", fmt_metric(v.get()));
                }
                for (tag, v) in &w.metrics.test {
                    let _ = writeln!(md, "| {tag} | {} |", fmt_metric(v.get()));
                }
                if let Some(epoch) = w.metrics.test_epoch {
                    let _ = writeln!(md, "| test metrics from epoch | {epoch} |");
                }
                md.push('\n');
            }
            None => {
                let _ = writeln!(
                    md,
                    "**No winner**: no finished run has a finite `{metric}`.\n"
                );
            }
        }
        let keys: BTreeSet<&String> = self.all_runs().flat_map(|r| r.varied.keys()).collect();
        if !self.runs.is_empty() {
            md.push_str("## Ranking\n\n| rank | run | id |");
            for k in &keys {
                let _ = write!(md, " {k} |");
            }
            let _ = writeln!(md, " {metric} | best epoch | final train/loss |");
            md.push_str("| ---: | --- | --- |");
            md.push_str(&" --- |".repeat(keys.len()));
            md.push_str(" ---: | ---: | ---: |\n");
            for r in &self.runs {
                let rank = r.rank.map_or(String::new(), |n| n.to_string());
                let name = if r.winner {
                    format!("**{}** (winner)", r.label())
                } else {
                    r.label().to_string()
                };
                let _ = write!(md, "| {rank} | {name} | `{}` |", r.id);
                for k in &keys {
                    let _ = write!(md, " {} |", show_value(r.varied.get(*k)));
                }
                let _ = writeln!(
                    md,
                    " {} | {} | {} |",
                    r.metrics.best.map_or("-".into(), |v| fmt_metric(v.get())),
                    r.metrics.best_epoch.map_or("-".into(), |e| e.to_string()),
                    r.metrics
                        .last
                        .get("train/loss")
                        .map_or("-".into(), |v| fmt_metric(v.get())),
                );
            }
            md.push('\n');
        }
        if !self.excluded.is_empty() {
            md.push_str("## Not selected\n\n| run | id |");
            for k in &keys {
                let _ = write!(md, " {k} |");
            }
            md.push_str(" state | reason |\n| --- | --- |");
            md.push_str(&" --- |".repeat(keys.len()));
            md.push_str(" --- | --- |\n");
            for r in &self.excluded {
                let _ = write!(md, "| {} | `{}` |", r.label(), r.id);
                for k in &keys {
                    let _ = write!(md, " {} |", show_value(r.varied.get(*k)));
                }
                let _ = writeln!(
                    md,
                    " {} | {} |",
                    state_name(r.state),
                    r.reason.as_deref().unwrap_or("")
                );
            }
            md.push('\n');
        }
        md
    }
}

/// The summary's entry for the run `s`, ranked `rank`.
pub(super) fn entry(
    s: &RunSummary,
    rank: Option<usize>,
    winner: bool,
    reason: Option<String>,
) -> RunEntry {
    RunEntry {
        rank,
        winner,
        reason,
        id: s.run.id.clone(),
        name: s.run.name.clone(),
        index: s.run.index,
        state: s.run.state,
        damaged: s.run.damaged.clone(),
        stale: s.run.stale.clone(),
        attempts: s.run.attempts,
        data: match &s.run.data {
            crate::grid::identity::DataFingerprint::Unread => None,
            files => Some(files.clone()),
        },
        numerics: (s.environment.numerics_version > 0).then_some(s.environment.numerics_version),
        replicate: s.run.replicate.clone(),
        varied: s.varied.clone(),
        metrics: s.metrics.clone(),
        config: s.config.clone(),
    }
}

/// A run state as written in `status.json`; `never started` without one.
pub fn state_name(state: Option<RunState>) -> String {
    state.map_or_else(|| "never started".into(), |s| s.to_string())
}

/// A varied value for people: strings without quotes, `-` when absent.
pub fn show_value(v: Option<&serde_json::Value>) -> String {
    match v {
        None => "-".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A summary file read for `diff`: an experiment summary, or a run summary wrapped as one.
pub fn parse_summary(text: &str, origin: &Path) -> Result<ExperimentSummary, SummaryError> {
    let corrupt = |e: serde_json::Error| SummaryError::Parse {
        path: origin.to_path_buf(),
        message: format!("not a valid summary (corrupt or truncated?): {e}"),
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(corrupt)?;
    if value.get("run").is_some() && value.get("experiment").is_none() {
        let run: RunSummary = serde_json::from_value(value).map_err(corrupt)?;
        let select = SelectSpec {
            metric: run.metrics.select.clone(),
            mode: run.metrics.mode,
            evaluate_test: true,
            rank: Default::default(),
            test_checkpoint: None,
        };
        return Ok(ExperimentSummary::from_runs("", &select, &[run]));
    }
    serde_json::from_value(value).map_err(corrupt)
}
