//! Picking the winner: a pure decision over the runs' scores, unit-tested without disk.
//!
//! Only finished runs (`done`) with a finite score take part. They are sorted by score in the
//! direction of `select.mode`, ties broken by grid index and then by run ID, so the order never
//! depends on the order directories were listed in. Everything else, a damaged run included,
//! is set apart with a reason.

use crate::spec::SelectMode;
use crate::store::RunState;
use std::cmp::Ordering;

/// What selection needs to know about one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub index: usize,
    pub id: String,
    pub state: Option<RunState>,
    /// The select metric at the run's best epoch; `None` when never logged.
    pub score: Option<f64>,
    /// Why its finished records are damaged ([`crate::store::check_finished`]).
    pub damaged: Option<String>,
    /// Why its results no longer match the current data or numerics
    /// ([`crate::store::check_current`]).
    pub stale: Option<String>,
}

/// The verdict: ranked positions (indices into the input) and the ones set apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    /// Input positions, best first; the first is the winner.
    pub ranked: Vec<usize>,
    /// Input positions with the reason each cannot win, in index then ID order.
    pub excluded: Vec<(usize, String)>,
}

impl Ranking {
    /// Input position of the winner, if any run qualified.
    pub fn winner(&self) -> Option<usize> {
        self.ranked.first().copied()
    }
}

/// Why a run cannot win, or `None` when it can.
pub fn exclusion_reason(c: &Candidate, metric: &str) -> Option<String> {
    if let Some(d) = &c.damaged {
        return Some(format!("damaged: {d}"));
    }
    // Results of other data or numerics are not comparable with the current plan's.
    if let Some(s) = &c.stale {
        return Some(format!("stale: {s}"));
    }
    match c.state {
        None => return Some("never started (no status.json)".into()),
        Some(RunState::Done) => {}
        Some(
            s @ (RunState::Failed | RunState::Diverged | RunState::Cancelled | RunState::Pruned),
        ) => {
            return Some(s.word().into());
        }
        Some(s @ (RunState::Queued | RunState::Running | RunState::Paused)) => {
            return Some(format!("incomplete ({s})"));
        }
    }
    match c.score {
        None => Some(format!("no finite {metric} recorded")),
        // What `SelectMode::is_better` never counts as a record cannot win either.
        Some(v) if !v.is_finite() => Some(format!("{metric} is {v}")),
        Some(_) => None,
    }
}

/// Ranks the candidates by `mode`; NaN, unfinished and failed runs never win.
pub fn rank(candidates: &[Candidate], metric: &str, mode: SelectMode) -> Ranking {
    let mut ranked = Vec::new();
    let mut excluded = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        match exclusion_reason(c, metric) {
            None => ranked.push(i),
            Some(reason) => excluded.push((i, reason)),
        }
    }
    let tie_break = |a: &Candidate, b: &Candidate| a.index.cmp(&b.index).then(a.id.cmp(&b.id));
    ranked.sort_by(|&a, &b| {
        let (ca, cb) = (&candidates[a], &candidates[b]);
        let (sa, sb) = (ca.score.unwrap_or(f64::NAN), cb.score.unwrap_or(f64::NAN));
        let by_score = if mode.is_better(sa, sb) {
            Ordering::Less
        } else if mode.is_better(sb, sa) {
            Ordering::Greater
        } else {
            Ordering::Equal
        };
        by_score.then_with(|| tie_break(ca, cb))
    });
    excluded.sort_by(|(a, _), (b, _)| tie_break(&candidates[*a], &candidates[*b]));
    Ranking { ranked, excluded }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(index: usize, id: &str, score: f64) -> Candidate {
        Candidate {
            index,
            id: id.into(),
            state: Some(RunState::Done),
            score: Some(score),
            damaged: None,
            stale: None,
        }
    }

    #[test]
    fn max_mode_puts_the_highest_first() {
        let c = vec![done(0, "a", 0.5), done(1, "b", 0.9), done(2, "c", 0.7)];
        let r = rank(&c, "dev/accuracy", SelectMode::Max);
        assert_eq!(r.ranked, vec![1, 2, 0]);
        assert_eq!(r.winner(), Some(1));
    }

    #[test]
    fn min_mode_puts_the_lowest_first() {
        let c = vec![done(0, "a", 0.5), done(1, "b", 0.9), done(2, "c", 0.1)];
        let r = rank(&c, "dev/error_rate", SelectMode::Min);
        assert_eq!(r.ranked, vec![2, 0, 1]);
    }

    #[test]
    fn ties_go_to_the_lower_grid_index_then_the_lower_id() {
        // Input order is scrambled on purpose: directory listing order must not matter.
        let c = vec![
            done(3, "ddd", 0.8),
            done(1, "zzz", 0.8),
            done(1, "aaa", 0.8),
            done(0, "bbb", 0.7),
        ];
        let r = rank(&c, "dev/accuracy", SelectMode::Max);
        assert_eq!(r.ranked, vec![2, 1, 0, 3]);
    }

    #[test]
    fn nan_and_infinite_scores_and_unfinished_runs_never_win() {
        let mut c = vec![
            done(0, "nan", f64::NAN),
            done(1, "inf", f64::INFINITY),
            done(2, "ok", 0.1),
        ];
        for (i, state) in [
            RunState::Failed,
            RunState::Diverged,
            RunState::Cancelled,
            RunState::Running,
            RunState::Queued,
        ]
        .into_iter()
        .enumerate()
        {
            c.push(Candidate {
                index: 3 + i,
                id: format!("s{i}"),
                state: Some(state),
                score: Some(0.99),
                damaged: None,
                stale: None,
            });
        }
        c.push(Candidate {
            index: 8,
            id: "never".into(),
            state: None,
            score: None,
            damaged: None,
            stale: None,
        });
        c.push(Candidate {
            index: 9,
            id: "nolog".into(),
            state: Some(RunState::Done),
            score: None,
            damaged: None,
            stale: None,
        });
        let r = rank(&c, "dev/accuracy", SelectMode::Max);
        assert_eq!(r.ranked, vec![2]);
        let reasons: Vec<&str> = r.excluded.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            reasons,
            vec![
                "dev/accuracy is NaN",
                "dev/accuracy is inf",
                "failed",
                "diverged",
                "cancelled",
                "incomplete (running)",
                "incomplete (queued)",
                "never started (no status.json)",
                "no finite dev/accuracy recorded",
            ]
        );
    }

    #[test]
    fn a_damaged_run_never_wins_and_says_why() {
        let mut best = done(0, "a", 0.99);
        best.damaged = Some("metrics.jsonl: deleted after the run finished".into());
        let c = vec![best, done(1, "b", 0.5)];
        let r = rank(&c, "dev/accuracy", SelectMode::Max);
        assert_eq!(r.ranked, vec![1]);
        assert_eq!(
            r.excluded,
            vec![(
                0,
                "damaged: metrics.jsonl: deleted after the run finished".to_string()
            )]
        );
    }

    #[test]
    fn no_qualifying_run_means_no_winner() {
        let c = vec![Candidate {
            index: 0,
            id: "a".into(),
            state: Some(RunState::Failed),
            score: Some(1.0),
            damaged: None,
            stale: None,
        }];
        assert_eq!(rank(&c, "dev/accuracy", SelectMode::Max).winner(), None);
    }
}
