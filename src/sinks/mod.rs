//! Consumers of run events: the metrics stream (and, merged from other branches,
//! TensorBoard).

pub mod metrics;
