//! Consumers of run events that write files: the metrics stream and TensorBoard logs.

pub mod metrics;
pub mod tensorboard;
