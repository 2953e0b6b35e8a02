//! Following a run's `metrics.jsonl` while its worker writes it.
//!
//! The store's [`MetricsTail`] reads what the worker appends; [`RunFollower`] turns it into
//! progress events. The local pool and the Slurm backend both use it.

use std::collections::BTreeMap;
use std::time::Instant;

use super::events::LaunchEvent;
use super::prepare::PreparedRun;
use super::progress::Reporter;
use crate::store::{self, MetricsTail};

/// The live numbers of one attempt of a run, read from its run directory.
#[derive(Debug)]
pub struct RunFollower {
    tail: MetricsTail,
    /// The attempt whose `status.json` counts (an older attempt's epoch is not progress).
    attempt: u32,
    epoch_reported: usize,
    step: u64,
    loss: Option<f64>,
    metric_value: Option<f64>,
    first_step: Option<(u64, Instant)>,
    rate: Option<f64>,
    /// The last numbers seen of each epoch not yet reported done: one poll can read past
    /// the end of an epoch into the next, whose step must not be reported as the end's.
    ends: BTreeMap<usize, EpochEnd>,
}

/// An epoch's numbers as its last records left them.
#[derive(Debug, Default, Clone, Copy)]
struct EpochEnd {
    step: u64,
    loss: Option<f64>,
    metric_value: Option<f64>,
}

impl RunFollower {
    /// Follows attempt `attempt` of `run`, which resumes after epoch `resumed_from`.
    pub fn new(run: &PreparedRun, attempt: u32, resumed_from: usize) -> Self {
        RunFollower {
            tail: MetricsTail::new(run.dir.metrics()),
            attempt,
            epoch_reported: resumed_from,
            step: 0,
            loss: None,
            metric_value: None,
            first_step: None,
            rate: None,
            ends: BTreeMap::new(),
        }
    }

    /// Reads what the worker wrote since the last poll and reports it: `Progress` when
    /// there were new records, `EpochDone` for each epoch now durable.
    pub fn poll(&mut self, r: &PreparedRun, reporter: &mut dyn Reporter) {
        // Status before metrics: the worker writes metrics first, so an epoch seen in the
        // status has its records in the file by the time the tail reads it.
        let durable = store::read_status(&r.dir)
            .ok()
            .flatten()
            .filter(|s| s.attempts == self.attempt)
            .map_or(0, |s| s.epoch);
        let records = self.tail.poll();
        let mut epoch_seen = self.epoch_reported;
        for rec in &records {
            self.step = self.step.max(rec.step);
            epoch_seen = epoch_seen.max(rec.epoch);
            let end = self.ends.entry(rec.epoch).or_default();
            end.step = end.step.max(rec.step);
            if rec.tag == "train/loss" {
                self.loss = Some(rec.value);
                end.loss = Some(rec.value);
            }
            if rec.tag == r.metric {
                self.metric_value = Some(rec.value);
                end.metric_value = Some(rec.value);
            }
        }
        if !records.is_empty() {
            let now = Instant::now();
            match self.first_step {
                None => self.first_step = Some((self.step, now)),
                Some((s0, t0)) => {
                    let dt = now.duration_since(t0).as_secs_f64();
                    if dt > 0.0 && self.step > s0 {
                        self.rate = Some((self.step - s0) as f64 / dt);
                    }
                }
            }
            reporter.report(&LaunchEvent::Progress {
                run_id: r.plan.id.clone(),
                name: r.plan.name.clone(),
                epoch: epoch_seen,
                epochs: r.epochs,
                step: self.step,
                loss: self.loss,
                metric: r.metric.clone(),
                metric_value: self.metric_value,
                steps_per_second: self.rate,
            });
        }
        while self.epoch_reported < durable {
            self.epoch_reported += 1;
            let end = self.ends.remove(&self.epoch_reported).unwrap_or(EpochEnd {
                step: self.step,
                loss: self.loss,
                metric_value: self.metric_value,
            });
            reporter.report(&LaunchEvent::EpochDone {
                run_id: r.plan.id.clone(),
                name: r.plan.name.clone(),
                epoch: self.epoch_reported,
                epochs: r.epochs,
                step: end.step,
                loss: end.loss,
                metric: r.metric.clone(),
                metric_value: end.metric_value,
            });
        }
        let reported = self.epoch_reported;
        self.ends.retain(|&e, _| e > reported);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::progress::PlainReporter;
    use crate::store::{PlanRecord, RunDir, RunState, RunStatus};
    use std::io::Write;

    /// The smoke experiment's epoch 1 ends at step 29 (900 images, batches of 32); the
    /// worker has already logged step 30 of epoch 2 when the follower sees epoch 1 durable.
    #[test]
    fn an_epoch_line_gives_the_epoch_s_last_step_not_the_next_epoch_s() {
        let dir = tempfile::tempdir().unwrap();
        let run = PreparedRun {
            plan: PlanRecord {
                index: 0,
                id: "abc123".into(),
                training_id: "abc123".into(),
                name: "lr0.001".into(),
                varied: Default::default(),
                data: Default::default(),
                numerics: 0,
                replicate: None,
                tensorboard: String::new(),
            },
            dir: RunDir::at(dir.path()),
            epochs: 2,
            metric: "dev/accuracy".into(),
            state: RunState::Running,
        };
        let line = |epoch: usize, step: u64, tag: &str, value: f64| {
            format!("{{\"epoch\":{epoch},\"step\":{step},\"tag\":\"{tag}\",\"value\":{value}}}\n")
        };
        let metrics = [
            line(1, 20, "train/running_loss", 0.9),
            line(1, 29, "train/loss", 0.8),
            line(1, 29, "dev/accuracy", 0.5),
            line(2, 30, "train/running_loss", 0.7),
        ]
        .concat();
        std::fs::write(run.dir.metrics(), metrics).unwrap();
        let status = RunStatus {
            state: RunState::Running,
            attempts: 1,
            epoch: 1,
            message: None,
            pid: None,
            pruned: None,
        };
        std::fs::write(run.dir.status(), serde_json::to_string(&status).unwrap()).unwrap();

        let mut out = Vec::new();
        let mut follower = RunFollower::new(&run, 1, 0);
        follower.poll(&run, &mut PlainReporter::new(&mut out));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "epoch  lr0.001 (abc123) 1/2 step 29 loss 0.8000 dev/accuracy 0.5000\n"
        );

        // Epoch 2 ends in a later poll, with its own numbers.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(run.dir.metrics())
            .unwrap();
        f.write_all(line(2, 58, "train/loss", 0.6).as_bytes())
            .unwrap();
        f.write_all(line(2, 58, "dev/accuracy", 0.7).as_bytes())
            .unwrap();
        let status = RunStatus { epoch: 2, ..status };
        std::fs::write(run.dir.status(), serde_json::to_string(&status).unwrap()).unwrap();
        let mut out = Vec::new();
        follower.poll(&run, &mut PlainReporter::new(&mut out));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "epoch  lr0.001 (abc123) 2/2 step 58 loss 0.6000 dev/accuracy 0.7000\n"
        );
    }
}
