//! Typed events a training run emits, and the sink trait every consumer implements.
//!
//! The training loop knows nothing of files or terminals: it emits [`RunEvent`]s; sinks
//! (metrics stream, TensorBoard, progress display, in-memory for tests) consume them.

use crate::store::RunState;

/// Something that happened in a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// An attempt started; `resumed_from` is the epoch of the checkpoint it resumed (0 = fresh).
    Started {
        attempt: u32,
        resumed_from: usize,
        epochs: usize,
        steps_per_epoch: u64,
    },
    /// A scalar at a global step.
    Scalar {
        epoch: usize,
        step: u64,
        tag: String,
        value: f64,
    },
    /// An 8-bit image, `channels` 1 (grey) or 3 (RGB), row-major HWC.
    Image {
        step: u64,
        tag: String,
        width: u32,
        height: u32,
        channels: u8,
        pixels: Vec<u8>,
    },
    /// Free text (Markdown), e.g. a table of sample translations.
    Text {
        step: u64,
        tag: String,
        text: String,
    },
    /// Each test item's result, emitted just before the test records: the worker writes it to
    /// `test_items.json` for `diff --paired`.
    TestItems(crate::store::TestItems),
    /// Every record of this epoch has been emitted; sinks make them durable before returning.
    EpochEnd { epoch: usize, step: u64 },
    /// The attempt ended in this state.
    Finished {
        state: RunState,
        epoch: usize,
        message: Option<String>,
    },
}

/// A consumer of run events.
pub trait EventSink {
    /// Consumes one event; an error stops the run (its records could not be kept).
    fn emit(&mut self, event: &RunEvent) -> Result<(), SinkError>;
}

/// Why a sink could not keep an event.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SinkError {
    /// What was being written, with its path.
    pub what: String,
    #[source]
    pub source: std::io::Error,
}

/// Keeps every event in memory; for tests and for the summary of an in-process run.
#[derive(Debug, Default)]
pub struct MemorySink {
    pub events: Vec<RunEvent>,
}

impl EventSink for MemorySink {
    fn emit(&mut self, event: &RunEvent) -> Result<(), SinkError> {
        self.events.push(event.clone());
        Ok(())
    }
}

/// Sends each event to several sinks in order.
pub struct FanOut<'a> {
    pub sinks: Vec<&'a mut dyn EventSink>,
}

impl EventSink for FanOut<'_> {
    fn emit(&mut self, event: &RunEvent) -> Result<(), SinkError> {
        for s in self.sinks.iter_mut() {
            s.emit(event)?;
        }
        Ok(())
    }
}
