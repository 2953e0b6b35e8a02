//! Early stopping as a small pure policy: fed one metric value per epoch, it says whether
//! the value improved and whether to stop. No I/O, so it is tested without disk and its
//! state goes into checkpoints as plain data.

use crate::spec::{EarlyStoppingSpec, SelectMode};
use serde::{Deserialize, Serialize};

/// What the policy decided after one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The value beat the best so far by more than `min_delta`.
    pub improved: bool,
    /// `patience` epochs in a row brought no improvement: stop training.
    pub stop: bool,
}

/// Early-stopping state: the best value so far and the epochs since it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping; 0 = never stop.
    pub patience: usize,
    #[serde(with = "crate::train::exact_f64")]
    pub min_delta: f64,
    pub mode: SelectMode,
    /// Best value seen so far (None before the first finite value).
    #[serde(with = "crate::train::exact_f64::option")]
    pub best: Option<f64>,
    /// Epoch of `best` (0 = none).
    pub best_epoch: usize,
    /// Epochs since the last improvement.
    pub bad_epochs: usize,
}

impl EarlyStopping {
    /// A fresh policy for `spec`, comparing values in `mode`.
    pub fn new(spec: &EarlyStoppingSpec, mode: SelectMode) -> Self {
        EarlyStopping {
            patience: spec.patience,
            min_delta: spec.min_delta.abs(),
            mode,
            best: None,
            best_epoch: 0,
            bad_epochs: 0,
        }
    }

    /// Records `value` for `epoch` and decides, by [`SelectMode::is_better`]'s rules: a NaN
    /// or an infinity never counts as an improvement.
    pub fn observe(&mut self, epoch: usize, value: f64) -> Decision {
        let improved = self.mode.improves(value, self.best, self.min_delta);
        if improved {
            self.best = Some(value);
            self.best_epoch = epoch;
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        Decision {
            improved,
            stop: self.patience > 0 && self.bad_epochs >= self.patience,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(patience: usize, min_delta: f64, mode: SelectMode) -> EarlyStopping {
        EarlyStopping::new(
            &EarlyStoppingSpec {
                patience,
                min_delta,
            },
            mode,
        )
    }

    #[test]
    fn stops_after_patience_epochs_without_improvement() {
        let mut p = policy(2, 0.0, SelectMode::Max);
        let stops: Vec<bool> = [0.5, 0.6, 0.6, 0.55, 0.7]
            .iter()
            .enumerate()
            .map(|(i, &v)| p.observe(i + 1, v).stop)
            .collect();
        // 0.6 again is not an improvement; the second flat epoch exhausts patience 2.
        assert_eq!(stops, vec![false, false, false, true, false]);
        assert_eq!((p.best, p.best_epoch), (Some(0.7), 5));
    }

    #[test]
    fn min_delta_and_min_mode() {
        let mut p = policy(1, 0.1, SelectMode::Min);
        assert!(p.observe(1, 1.0).improved);
        let d = p.observe(2, 0.95);
        assert!(!d.improved && d.stop, "0.05 better is within min_delta");
        assert!(p.observe(3, 0.85).improved);
        assert_eq!(p.best, Some(0.85));
    }

    #[test]
    fn patience_zero_never_stops_but_tracks_best() {
        let mut p = policy(0, 0.0, SelectMode::Max);
        for (e, v) in [0.9, 0.1, 0.1, 0.1, 0.1].into_iter().enumerate() {
            assert!(!p.observe(e + 1, v).stop);
        }
        assert_eq!(p.best_epoch, 1);
    }

    #[test]
    fn nan_is_never_best() {
        let mut p = policy(3, 0.0, SelectMode::Max);
        assert!(!p.observe(1, f64::NAN).improved);
        assert!(p.observe(2, 0.1).improved);
        assert!(!p.observe(3, f64::NAN).improved);
        assert_eq!(p.best, Some(0.1));
    }

    #[test]
    fn an_infinity_is_divergence_not_a_best_that_stops_training() {
        // On main a first `+inf` accuracy became the best, so every later real value counted
        // as no improvement and patience stopped the run.
        let mut p = policy(2, 0.0, SelectMode::Max);
        assert!(!p.observe(1, f64::INFINITY).improved);
        assert!(p.observe(2, 0.5).improved);
        assert!(!p.observe(3, 0.4).stop);
        assert_eq!((p.best, p.best_epoch), (Some(0.5), 2));
        let mut p = policy(2, 0.0, SelectMode::Min);
        assert!(p.observe(1, 0.5).improved);
        assert!(!p.observe(2, f64::NEG_INFINITY).improved);
        assert!(p.observe(3, 0.4).improved);
        assert_eq!(p.best, Some(0.4));
    }

    #[test]
    fn state_round_trips_through_json_exactly() {
        let mut p = policy(3, 1e-3, SelectMode::Max);
        p.observe(1, 0.1 + 0.2);
        let json = serde_json::to_string(&p).unwrap();
        let back: EarlyStopping = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.best.unwrap().to_bits(), (0.1f64 + 0.2).to_bits());
    }
}
