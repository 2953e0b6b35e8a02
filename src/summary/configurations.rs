//! Configurations of replicates: the statistics of each configuration's runs, the ranking of
//! configurations and whether the top two can be told apart. A pure step over the ranked runs,
//! like [`super::select`]: the run ranking decides which runs count, this groups them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::experiment::RunEntry;
use super::num::Num;
use super::select::{Candidate, rank};
use crate::spec::{SelectMode, SelectRank};
use crate::stats;
use crate::store::RunState;

/// Mean, spread and 95% interval of one metric over a configuration's replicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub n: usize,
    pub mean: Num,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sd: Option<Num>,
    /// `[low, high]` of the Student-t interval of the mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci95: Option<[Num; 2]>,
}

impl Stat {
    /// The statistics of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let d = stats::describe(values)?;
        Some(Stat {
            n: d.n,
            mean: Num(d.mean),
            sd: d.sd.map(Num),
            ci95: d.ci95.map(|i| [Num(i.low), Num(i.high)]),
        })
    }

    /// The figure `rank` orders configurations by: the mean, or the end of the interval that is
    /// worse in `mode`'s direction (the mean when there is no interval).
    pub fn score(&self, rank: SelectRank, mode: SelectMode) -> f64 {
        match (rank, &self.ci95) {
            (SelectRank::LowerBound, Some([low, high])) => match mode {
                SelectMode::Max => low.get(),
                SelectMode::Min => high.get(),
            },
            _ => self.mean.get(),
        }
    }

    /// The figures [`stats`] computes with.
    pub fn describe(&self) -> stats::Describe {
        stats::Describe {
            n: self.n,
            mean: self.mean.get(),
            sd: self.sd.map(Num::get),
            ci95: self.interval(),
        }
    }

    fn interval(&self) -> Option<stats::Interval> {
        self.ci95.map(|[low, high]| stats::Interval {
            low: low.get(),
            high: high.get(),
        })
    }

    /// `0.8590 ± 0.0021 (n=5)`: the mean and the interval's half width.
    pub fn show(&self) -> String {
        let mean = super::num::fmt_metric(self.mean.get());
        match &self.ci95 {
            Some([low, high]) => format!(
                "{mean} ± {} (n={})",
                super::num::fmt_metric((high.get() - low.get()) / 2.0),
                self.n
            ),
            None => format!("{mean} (n={})", self.n),
        }
    }
}

/// One configuration: the group of its replicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationEntry {
    /// 1-based place in the ranking of configurations; `None` when set apart.
    pub rank: Option<usize>,
    pub winner: bool,
    /// Why the configuration cannot win; only for configurations set apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub id: String,
    /// The configuration's name: its runs' name without the replicate.
    pub name: String,
    /// Grid index of its first replicate.
    pub index: usize,
    /// Its replicates' run IDs, by replicate index.
    pub runs: Vec<String>,
    pub varied: BTreeMap<String, serde_json::Value>,
    /// The select metric at each replicate's best epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<Stat>,
    /// Each test metric over the replicates that have it.
    pub test: BTreeMap<String, Stat>,
}

/// Whether the best configuration is told apart from the runner-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    /// The runner-up configuration's ID.
    pub runner_up: String,
    /// The two 95% intervals of the select metric's mean overlap.
    pub overlap: bool,
    /// Welch's two-sided p-value of "the two means are equal", when both have n >= 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welch_p: Option<Num>,
    /// Neither overlap nor p > 0.05: the winner is better with 95% confidence.
    pub distinguishable: bool,
}

/// The p-value above which two configurations are called indistinguishable.
pub const ALPHA: f64 = 0.05;

/// Groups `runs` (ranked ones first, then those set apart, as the summary lists them) into
/// configurations, ranks them by `rank` in `mode` and says whether the top two differ.
/// Empty when no run is a replicate.
pub fn configurations(
    ranked: &[RunEntry],
    excluded: &[RunEntry],
    mode: SelectMode,
    rank_by: SelectRank,
) -> (Vec<ConfigurationEntry>, Option<Confidence>) {
    let mut groups: BTreeMap<&str, Vec<&RunEntry>> = BTreeMap::new();
    for r in ranked.iter().chain(excluded) {
        if r.replicate.is_some() {
            groups.entry(r.configuration()).or_default().push(r);
        }
    }
    if groups.is_empty() {
        return (Vec::new(), None);
    }
    let mut entries: Vec<ConfigurationEntry> = Vec::new();
    let mut set_apart: Vec<Option<String>> = Vec::new();
    let mut samples: Vec<Vec<f64>> = Vec::new();
    for (id, mut runs) in groups {
        runs.sort_by_key(|r| r.replicate.as_ref().map_or(0, |p| p.index));
        // A configuration counts only when every replicate does: a diverged or unfinished
        // replicate is evidence about the configuration, not a run to leave out.
        let reason = runs.iter().find_map(|r| {
            r.reason
                .as_ref()
                .map(|why| format!("replicate {}: {why}", r.label()))
        });
        let best: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.metrics.best.map(|n| n.get()))
            .collect();
        let mut test: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &runs {
            for (tag, v) in &r.metrics.test {
                test.entry(tag.clone()).or_default().push(v.get());
            }
        }
        let first = runs[0];
        entries.push(ConfigurationEntry {
            rank: None,
            winner: false,
            reason: None,
            id: id.to_string(),
            name: configuration_name(first),
            index: runs.iter().map(|r| r.index).min().unwrap_or(first.index),
            runs: runs.iter().map(|r| r.id.clone()).collect(),
            varied: first.varied.clone(),
            select: Stat::of(&best),
            test: test
                .iter()
                .filter_map(|(tag, vs)| Some((tag.clone(), Stat::of(vs)?)))
                .collect(),
        });
        set_apart.push(reason);
        samples.push(best);
    }
    let candidates: Vec<Candidate> = entries
        .iter()
        .zip(&set_apart)
        .map(|(e, why)| Candidate {
            index: e.index,
            id: e.id.clone(),
            state: Some(if why.is_some() {
                RunState::Failed
            } else {
                RunState::Done
            }),
            score: e.select.as_ref().map(|s| s.score(rank_by, mode)),
            damaged: None,
            stale: None,
        })
        .collect();
    let ranking = rank(&candidates, "the select metric", mode);
    for (place, &i) in ranking.ranked.iter().enumerate() {
        entries[i].rank = Some(place + 1);
        entries[i].winner = place == 0;
    }
    for (i, why) in &ranking.excluded {
        entries[*i].reason = Some(set_apart[*i].clone().unwrap_or_else(|| why.clone()));
    }
    let confidence = match ranking.ranked[..] {
        [a, b, ..] => Some(confidence(
            &entries[a],
            &samples[a],
            &entries[b],
            &samples[b],
        )),
        _ => None,
    };
    let order: Vec<usize> = ranking
        .ranked
        .iter()
        .copied()
        .chain(ranking.excluded.iter().map(|(i, _)| *i))
        .collect();
    let mut slots: Vec<Option<ConfigurationEntry>> = entries.into_iter().map(Some).collect();
    let sorted = order.iter().filter_map(|&i| slots[i].take()).collect();
    (sorted, confidence)
}

fn confidence(
    best: &ConfigurationEntry,
    best_values: &[f64],
    next: &ConfigurationEntry,
    next_values: &[f64],
) -> Confidence {
    let interval = |e: &ConfigurationEntry| e.select.as_ref().and_then(Stat::interval);
    // Without an interval (a single replicate) nothing says the two differ.
    let overlap = match (interval(best), interval(next)) {
        (Some(a), Some(b)) => a.overlaps(&b),
        _ => true,
    };
    let welch_p = stats::welch(next_values, best_values).map(|w| w.p);
    let distinguishable = !overlap && welch_p.is_none_or(|p| p <= ALPHA);
    Confidence {
        runner_up: next.id.clone(),
        overlap,
        welch_p: welch_p.map(Num),
        distinguishable,
    }
}

/// A replicate's run name without its replicate suffix.
fn configuration_name(r: &RunEntry) -> String {
    let k = r.replicate.as_ref().map_or(0, |p| p.index);
    let suffix = crate::grid::identity::replicate_name("", k);
    r.name
        .strip_suffix(&suffix)
        .map(|s| s.trim_end_matches('-').to_string())
        .unwrap_or_else(|| r.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Replicate;

    fn replicate(config: &str, k: u32, best: f64, reason: Option<&str>) -> RunEntry {
        let mut e: RunEntry = serde_json::from_value(serde_json::json!({
            "rank": null, "winner": false, "id": format!("{config}{k}"),
            "name": format!("{config}-rep{k}"), "index": k, "state": "done", "attempts": 1,
            "varied": {}, "config": {},
            "metrics": {"select": "dev/accuracy", "mode": "max", "best_epoch": 1,
                        "best": best, "final": {}, "test": {"test/accuracy": best - 0.01},
                        "epochs": []},
        }))
        .unwrap();
        e.replicate = Some(Replicate {
            configuration: config.into(),
            index: k,
        });
        e.reason = reason.map(String::from);
        e
    }

    fn group(config: &str, values: &[f64]) -> Vec<RunEntry> {
        (0..values.len())
            .map(|k| replicate(config, k as u32, values[k], None))
            .collect()
    }

    #[test]
    fn the_mean_ranks_and_the_lower_bound_prefers_agreeing_replicates() {
        // `wild` has the higher mean, `steady` the higher lower bound.
        let mut runs = group("wild", &[0.95, 0.60, 0.99]);
        runs.extend(group("steady", &[0.83, 0.84, 0.83]));
        let (by_mean, _) = configurations(&runs, &[], SelectMode::Max, SelectRank::Mean);
        assert_eq!(by_mean[0].id, "wild");
        assert!(by_mean[0].winner && !by_mean[1].winner);
        assert_eq!(by_mean[0].name, "wild");
        assert_eq!(by_mean[0].runs, ["wild0", "wild1", "wild2"]);
        let (by_bound, _) = configurations(&runs, &[], SelectMode::Max, SelectRank::LowerBound);
        assert_eq!(by_bound[0].id, "steady");
        // For a metric to minimise the pessimistic end is the top of the interval.
        let (min_bound, _) = configurations(&runs, &[], SelectMode::Min, SelectRank::LowerBound);
        assert_eq!(min_bound[0].id, "steady");
        let s = by_mean[1].select.as_ref().unwrap();
        assert_eq!(s.n, 3);
        assert!(s.score(SelectRank::LowerBound, SelectMode::Min) > s.mean.get());
    }

    #[test]
    fn overlapping_configurations_are_not_distinguishable_and_separated_ones_are() {
        let mut close = group("a", &[0.80, 0.82, 0.81]);
        close.extend(group("b", &[0.81, 0.79, 0.80]));
        let (_, c) = configurations(&close, &[], SelectMode::Max, SelectRank::Mean);
        let c = c.unwrap();
        assert_eq!(c.runner_up, "b");
        assert!(c.overlap && !c.distinguishable);
        let mut apart = group("a", &[0.90, 0.91, 0.905]);
        apart.extend(group("b", &[0.80, 0.79, 0.805]));
        let (_, c) = configurations(&apart, &[], SelectMode::Max, SelectRank::Mean);
        let c = c.unwrap();
        assert!(!c.overlap && c.distinguishable);
        assert!(c.welch_p.unwrap().get() < ALPHA);
    }

    #[test]
    fn a_configuration_with_a_failed_replicate_is_set_apart_and_says_which() {
        let ranked = group("a", &[0.7, 0.71]);
        let mut excluded = group("b", &[0.99, 0.98]);
        excluded[1].reason = Some("diverged".into());
        let ranked_b = excluded.remove(0);
        let mut all_ranked = ranked.clone();
        all_ranked.push(ranked_b);
        let (cs, conf) = configurations(&all_ranked, &excluded, SelectMode::Max, SelectRank::Mean);
        assert_eq!(cs[0].id, "a");
        assert!(cs[0].winner);
        assert_eq!(cs[1].rank, None);
        assert_eq!(cs[1].reason.as_deref(), Some("replicate b-rep1: diverged"));
        // One ranked configuration: nothing to compare it with.
        assert_eq!(conf, None);
    }

    #[test]
    fn runs_without_replicates_make_no_configurations() {
        let mut r = replicate("a", 0, 0.5, None);
        r.replicate = None;
        assert_eq!(
            configurations(&[r], &[], SelectMode::Max, SelectRank::Mean),
            (Vec::new(), None)
        );
    }
}
