//! The end of an epoch, shared by every training loop: early stopping on `select.metric` in
//! `select.mode`, the checkpoint and its retention. One place, so the classifier and the
//! translator honour the same `train.*` keys the same way.

use super::checkpoint::{self, CheckpointState, RngState};
use super::early_stopping::EarlyStopping;
use super::seeding::SCHEME;
use super::{RunContext, TrainError};
use candle_core::Tensor;
use std::path::PathBuf;

/// What the loop does after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Early stopping's patience ran out at this epoch.
    pub stopped_early: bool,
    /// No epoch follows this one (the last epoch, or stopped early).
    pub last: bool,
}

/// Epoch-end bookkeeping of one run: the early-stopping state and where checkpoints go.
pub struct EpochEnd<'a> {
    ctx: &'a RunContext,
    dir: PathBuf,
    early: EarlyStopping,
}

/// The value of `select.metric` among the metrics an epoch recorded (`(tag, value)`); NaN
/// when the epoch did not record it (validation refuses such a metric before training).
pub fn selected(metric: &str, recorded: &[(&str, f64)]) -> f64 {
    recorded
        .iter()
        .find(|(tag, _)| *tag == metric)
        .map_or(f64::NAN, |&(_, v)| v)
}

impl<'a> EpochEnd<'a> {
    /// Fresh bookkeeping for `ctx`.
    pub fn new(ctx: &'a RunContext) -> Self {
        let cfg = &ctx.config;
        EpochEnd {
            ctx,
            dir: ctx.run_dir.checkpoints(),
            early: EarlyStopping::new(&cfg.train.early_stopping, cfg.select.mode),
        }
    }

    /// Continues from a resumed checkpoint's early-stopping state; returns whether that
    /// checkpoint ended training (stopped early, or its last epoch is this run's last).
    pub fn resume(&mut self, state: &CheckpointState) -> bool {
        self.early = state.early_stopping.clone();
        state.stopped_early || (state.finished && state.epoch >= self.ctx.config.train.epochs)
    }

    /// Feeds epoch `epoch`'s value of the selection metric to early stopping.
    pub fn decide(&mut self, epoch: usize, metric: f64) -> Verdict {
        let decision = self.early.observe(epoch, metric);
        Verdict {
            stopped_early: decision.stop,
            last: epoch >= self.ctx.config.train.epochs || decision.stop,
        }
    }

    /// Writes the checkpoint of `epoch` (with the metric and the verdict of [`Self::decide`])
    /// and prunes by `train.checkpoint` in `select.mode`.
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        epoch: usize,
        step: u64,
        optimizer_steps: u64,
        metric: f64,
        verdict: Verdict,
        model: Vec<(String, Tensor)>,
        optimizer: Vec<(String, Tensor)>,
    ) -> Result<(), TrainError> {
        let cfg = &self.ctx.config;
        let state = CheckpointState {
            format: 1,
            training_id: self.ctx.training_id.clone(),
            epoch,
            step,
            optimizer_steps,
            metric: metric.is_finite().then_some(metric),
            early_stopping: self.early.clone(),
            stopped_early: verdict.stopped_early,
            finished: verdict.last,
            rng: RngState {
                seed: cfg.training_seed(),
                scheme: SCHEME.into(),
            },
        };
        checkpoint::save(&self.dir, model, optimizer, &state)?;
        let ck = &cfg.train.checkpoint;
        checkpoint::prune(&self.dir, ck.keep_last, ck.keep_best, cfg.select.mode)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::selected;

    #[test]
    fn selected_finds_the_named_metric_and_nan_otherwise() {
        let rec = [("dev/loss", 0.5), ("dev/accuracy", 0.9)];
        assert_eq!(selected("dev/accuracy", &rec), 0.9);
        assert!(selected("dev/error_rate", &rec).is_nan());
    }
}
