//! Reporters: what the user sees of a launch, fed the same [`LaunchEvent`] stream.
//!
//! A terminal gets a live display (one line per active run and an overall bar with ETA);
//! a pipe gets one plain line per event; `--json` gets one JSON object per event for tools;
//! `--quiet` prints nothing but errors and the winner.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::events::LaunchEvent;

/// A consumer of launch events.
pub trait Reporter {
    /// Shows one event.
    fn report(&mut self, event: &LaunchEvent);
}

/// How the user asked to see progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Live display on a terminal, plain lines otherwise.
    Auto,
    Plain,
    Json,
    Quiet,
}

/// The reporter for `mode`, given whether stdout is a terminal.
pub fn reporter(mode: OutputMode) -> Box<dyn Reporter> {
    match mode {
        OutputMode::Auto if std::io::stdout().is_terminal() => Box::new(LiveReporter::new()),
        OutputMode::Auto | OutputMode::Plain => Box::new(PlainReporter::new(std::io::stdout())),
        OutputMode::Json => Box::new(JsonReporter(std::io::stdout())),
        OutputMode::Quiet => Box::new(QuietReporter),
    }
}

/// Prints nothing but the winner.
pub struct QuietReporter;

impl Reporter for QuietReporter {
    fn report(&mut self, event: &LaunchEvent) {
        if let LaunchEvent::Winner { .. } = event
            && let Some(line) = plain_line(event)
        {
            println!("{line}");
        }
    }
}

/// One JSON object per line.
pub struct JsonReporter<W: Write>(pub W);

impl<W: Write> Reporter for JsonReporter<W> {
    fn report(&mut self, event: &LaunchEvent) {
        if let Ok(s) = serde_json::to_string(event) {
            let _ = writeln!(self.0, "{s}");
            let _ = self.0.flush();
        }
    }
}

/// One human-readable line per event (progress ticks are left out).
pub struct PlainReporter<W: Write> {
    out: W,
}

impl<W: Write> PlainReporter<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> Self {
        PlainReporter { out }
    }
}

impl<W: Write> Reporter for PlainReporter<W> {
    fn report(&mut self, event: &LaunchEvent) {
        if let Some(line) = plain_line(event) {
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
        }
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

/// The plain-text line of an event; `None` for live-only ticks.
pub fn plain_line(event: &LaunchEvent) -> Option<String> {
    Some(match event {
        LaunchEvent::GridStarted {
            experiment,
            runs,
            to_run,
            jobs,
            threads_per_job,
            ..
        } => format!(
            "{experiment}: {runs} run(s), {to_run} to run, {jobs} job(s) x {threads_per_job} thread(s)"
        ),
        LaunchEvent::Note { message } => format!("note: {message}"),
        LaunchEvent::RunSkipped {
            run_id,
            name,
            state,
        } => {
            format!("skip   {name} ({run_id}): already {}", state.word())
        }
        LaunchEvent::RunStarted {
            run_id,
            name,
            attempt,
            pid,
            job,
            device,
            resumed_from,
            epochs,
        } => {
            let from = if *resumed_from > 0 {
                format!(", resuming after epoch {resumed_from}/{epochs}")
            } else {
                String::new()
            };
            let at = match (pid, job) {
                (_, Some(job)) => format!(", slurm task {job}"),
                (Some(pid), None) => format!(", pid {pid}"),
                (None, None) => String::new(),
            };
            format!("start  {name} ({run_id}) attempt {attempt}{at}, {device}{from}")
        }
        LaunchEvent::Progress { .. } => return None,
        LaunchEvent::EpochDone {
            run_id,
            name,
            epoch,
            epochs,
            step,
            loss,
            metric,
            metric_value,
        } => format!(
            "epoch  {name} ({run_id}) {epoch}/{epochs} step {step} loss {} {metric} {}",
            fmt_opt(*loss),
            fmt_opt(*metric_value)
        ),
        LaunchEvent::RunFinished {
            run_id,
            name,
            attempt,
            state,
            message,
            retry,
        } => {
            let msg = message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            let retry = if *retry { "; retrying" } else { "" };
            format!(
                "{:<6} {name} ({run_id}) attempt {attempt}{msg}{retry}",
                state.word()
            )
        }
        LaunchEvent::SlurmSubmitted {
            job_id,
            runs,
            attached,
        } => {
            if *attached && *runs == 0 {
                format!("slurm  array job {job_id}, submitted earlier, has ended")
            } else if *attached {
                format!(
                    "slurm  array job {job_id}, submitted earlier, followed again ({runs} run(s) still in it)"
                )
            } else {
                format!("slurm  submitted array job {job_id} ({runs} run(s))")
            }
        }
        LaunchEvent::SlurmTask {
            run_id,
            name,
            job,
            phase,
        } => format!("slurm  {name} ({run_id}) task {job}: {phase}"),
        LaunchEvent::Detached {
            experiment,
            jobs,
            runs,
        } => format!(
            "detached: {runs} run(s) in Slurm array job(s) {}; follow with \
             `orchestrate status {experiment}`, pick the tracking up again (and summarize) \
             with the same `orchestrate run` command",
            jobs.join(", ")
        ),
        LaunchEvent::Interrupted {
            signals,
            grace_seconds,
        } => {
            if *signals >= 2 {
                "interrupted again: killing workers now".into()
            } else {
                format!(
                    "interrupted: asking workers to checkpoint and stop (up to {grace_seconds} s; \
                     Ctrl-C again to kill them now)"
                )
            }
        }
        LaunchEvent::FailFast { run_id } => {
            format!("--fail-fast: {run_id} failed; stopping the other runs")
        }
        LaunchEvent::GridFinished {
            done,
            failed,
            diverged,
            cancelled,
            pruned,
            not_started,
            seconds,
        } => format!(
            "finished in {seconds:.1} s: {done} done, {failed} failed, {diverged} diverged, \
             {cancelled} cancelled, {}{not_started} not started",
            if *pruned > 0 {
                format!("{pruned} pruned, ")
            } else {
                String::new()
            }
        ),
        LaunchEvent::Winner { line, .. } => line.clone(),
    })
}

/// The live terminal display: an overall bar with ETA and one line per active run.
pub struct LiveReporter {
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    runs: HashMap<String, ProgressBar>,
    /// Epochs each active run had finished when last seen, to advance the overall bar.
    seen_epochs: HashMap<String, usize>,
}

impl Default for LiveReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveReporter {
    /// A display on stdout.
    pub fn new() -> Self {
        LiveReporter {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            overall: None,
            runs: HashMap::new(),
            seen_epochs: HashMap::new(),
        }
    }

    fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    fn advance(&mut self, run_id: &str, epoch: usize) {
        let seen = self.seen_epochs.entry(run_id.to_string()).or_insert(epoch);
        if epoch > *seen {
            if let Some(o) = &self.overall {
                o.inc((epoch - *seen) as u64);
            }
            *seen = epoch;
        }
    }
}

impl Reporter for LiveReporter {
    fn report(&mut self, event: &LaunchEvent) {
        match event {
            LaunchEvent::GridStarted {
                epochs_to_train, ..
            } => {
                if let Some(line) = plain_line(event) {
                    self.println(&line);
                }
                let bar = self.multi.add(ProgressBar::new(*epochs_to_train as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} epochs  {elapsed_precise} elapsed, ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.enable_steady_tick(Duration::from_millis(500));
                self.overall = Some(bar);
            }
            LaunchEvent::RunStarted {
                run_id,
                name,
                resumed_from,
                epochs,
                ..
            } => {
                if let Some(line) = plain_line(event) {
                    self.println(&line);
                }
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(format!("{name}  epoch {resumed_from}/{epochs}  starting"));
                bar.enable_steady_tick(Duration::from_millis(200));
                self.runs.insert(run_id.clone(), bar);
                self.seen_epochs.insert(run_id.clone(), *resumed_from);
            }
            LaunchEvent::Progress {
                run_id,
                name,
                epoch,
                epochs,
                step,
                loss,
                metric,
                metric_value,
                steps_per_second,
            } => {
                if let Some(bar) = self.runs.get(run_id) {
                    let rate = steps_per_second
                        .map(|r| format!("  {r:.1} steps/s"))
                        .unwrap_or_default();
                    bar.set_message(format!(
                        "{name}  epoch {epoch}/{epochs}  step {step}  loss {}  {metric} {}{rate}",
                        fmt_opt(*loss),
                        fmt_opt(*metric_value)
                    ));
                }
            }
            LaunchEvent::EpochDone { run_id, epoch, .. } => {
                let (id, e) = (run_id.clone(), *epoch);
                self.advance(&id, e);
            }
            LaunchEvent::RunFinished { run_id, .. } => {
                if let Some(bar) = self.runs.remove(run_id) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                if let Some(line) = plain_line(event) {
                    self.println(&line);
                }
            }
            LaunchEvent::GridFinished { .. } => {
                if let Some(o) = self.overall.take() {
                    o.finish_and_clear();
                }
                if let Some(line) = plain_line(event) {
                    self.println(&line);
                }
            }
            _ => {
                if let Some(line) = plain_line(event) {
                    self.println(&line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunState;

    #[test]
    fn plain_and_json_lines() {
        let events = vec![
            LaunchEvent::RunStarted {
                run_id: "abc123".into(),
                name: "lr=0.01".into(),
                attempt: 2,
                pid: Some(7),
                job: None,
                device: "cpu".into(),
                resumed_from: 1,
                epochs: 3,
            },
            LaunchEvent::RunFinished {
                run_id: "abc123".into(),
                name: "lr=0.01".into(),
                attempt: 2,
                state: RunState::Failed,
                message: Some("worker killed by signal 9".into()),
                retry: true,
            },
        ];
        let mut out = Vec::new();
        let mut r = PlainReporter::new(&mut out);
        for e in &events {
            r.report(e);
        }
        insta::assert_snapshot!(String::from_utf8(out).unwrap(), @r"
        start  lr=0.01 (abc123) attempt 2, pid 7, cpu, resuming after epoch 1/3
        failed lr=0.01 (abc123) attempt 2: worker killed by signal 9; retrying
        ");
        let mut out = Vec::new();
        JsonReporter(&mut out).report(&events[1]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["event"], "run_finished");
        assert_eq!(v["state"], "failed");
    }
}
