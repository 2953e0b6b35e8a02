//! Data readers. This branch holds the parallel-text side: TSV pairs and character
//! vocabularies (the images branch adds its readers here).

pub mod pairs;
pub mod vocab;
