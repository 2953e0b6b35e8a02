//! Models. This branch holds the sequence-to-sequence side (the images branch adds `cnn`
//! and `mlp` here).

pub mod attention;
pub mod decode;
pub mod lstm;
pub mod seeded;
pub mod seq2seq;
