//! Serde helpers that store `f64` in JSON as exact decimal strings.
//!
//! serde_json without its `float_roundtrip` feature may parse a float one unit in the last
//! place off; a resumed run compares its best metric against values from before the
//! interruption, so checkpoints keep floats as Rust's shortest round-trip text instead.

use serde::{Deserialize, Deserializer, Serializer};

/// Serializes an `f64` as its shortest exact decimal text (`"0.30000000000000004"`).
pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:?}"))
}

/// Parses the text written by [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// The same for `Option<f64>` (`null` when absent).
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some(v)` as exact text, `None` as null.
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&format!("{v:?}")),
            None => s.serialize_none(),
        }
    }

    /// Parses what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}
