//! One canonical written form for metric values.
//!
//! Finite values are written as JSON numbers in the shortest form that reads back to the same
//! bits (what `serde_json` does through `ryu`), `-0.0` is written as `0.0`, and the values JSON
//! has no number for are the strings `"NaN"`, `"inf"` and `"-inf"`. Two runs with the same
//! metrics therefore write the same bytes, and a diverged run's NaN survives a round trip instead
//! of turning into `null`.

use serde::Deserializer;
use serde::{Serialize, Serializer};
use std::fmt;

/// A metric value with a canonical JSON form; NaN equals NaN so that summaries compare exactly.
#[derive(Debug, Clone, Copy)]
pub struct Num(pub f64);

impl Num {
    /// The value, `-0.0` folded into `0.0`.
    pub fn get(self) -> f64 {
        if self.0 == 0.0 { 0.0 } else { self.0 }
    }

    /// True for NaN and the infinities.
    pub fn is_finite(self) -> bool {
        self.0.is_finite()
    }
}

impl PartialEq for Num {
    fn eq(&self, other: &Self) -> bool {
        (self.0.is_nan() && other.0.is_nan()) || self.get().to_bits() == other.get().to_bits()
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Self {
        Num(v)
    }
}

impl fmt::Display for Num {
    /// The same text as the JSON form, without quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.get();
        if v.is_nan() {
            f.write_str("NaN")
        } else if v == f64::INFINITY {
            f.write_str("inf")
        } else if v == f64::NEG_INFINITY {
            f.write_str("-inf")
        } else {
            // serde_json's own text for a finite f64, so Display and JSON never disagree.
            match serde_json::to_string(&v) {
                Ok(text) => f.write_str(&text),
                Err(_) => write!(f, "{v:?}"),
            }
        }
    }
}

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.get();
        if v.is_finite() {
            s.serialize_f64(v)
        } else {
            s.serialize_str(&self.to_string())
        }
    }
}

/// Reads every spelling the run records use ([`crate::store::metrics::MetricValue`]).
impl<'de> serde::Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::store::metrics::MetricValue::deserialize(d).map(|v| Num(v.0))
    }
}

/// A metric for people: four decimals, or scientific notation for tiny magnitudes.
pub fn fmt_metric(v: f64) -> String {
    if !v.is_finite() {
        return Num(v).to_string();
    }
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// A signed difference for people; a non-zero difference never prints as zero.
pub fn fmt_delta(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d == 0.0 {
        return "0".into();
    }
    if d.abs() < 5e-5 {
        format!("{d:+.2e}")
    } else {
        format!("{d:+.4}")
    }
}

/// A p-value for people: four decimals, `<0.0001` below that.
pub fn fmt_p(p: f64) -> String {
    if p < 1e-4 {
        "<0.0001".into()
    } else {
        format!("{p:.4}")
    }
}

/// `p=0.0312`, or `p<0.0001`.
pub fn p_clause(p: f64) -> String {
    let shown = fmt_p(p);
    let sep = if shown.starts_with('<') { "" } else { "=" };
    format!("p{sep}{shown}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: f64) -> String {
        serde_json::to_string(&Num(v)).unwrap()
    }

    #[test]
    fn finite_values_use_the_shortest_round_trip_form() {
        assert_eq!(json(0.1), "0.1");
        assert_eq!(json(0.8712), "0.8712");
        assert_eq!(json(1e-5), "0.00001");
        assert_eq!(json(1e-20), "1e-20");
        assert_eq!(json(2.0), "2.0");
        assert_eq!(json(0.1 + 0.2), "0.30000000000000004");
        for v in [
            0.1 + 0.2,
            1.0 / 3.0,
            123456.789e-12,
            f64::MIN_POSITIVE,
            f64::MAX,
        ] {
            let back: Num = serde_json::from_str(&json(v)).unwrap();
            assert_eq!(back.0.to_bits(), v.to_bits(), "{v} did not round-trip");
        }
    }

    #[test]
    fn negative_zero_is_written_as_zero() {
        assert_eq!(json(-0.0), json(0.0));
        assert_eq!(Num(-0.0), Num(0.0));
    }

    #[test]
    fn non_finite_values_are_strings_and_read_back() {
        assert_eq!(json(f64::NAN), "\"NaN\"");
        assert_eq!(json(f64::INFINITY), "\"inf\"");
        assert_eq!(json(f64::NEG_INFINITY), "\"-inf\"");
        let nan: Num = serde_json::from_str("\"NaN\"").unwrap();
        assert!(nan.0.is_nan());
        assert_eq!(nan, Num(f64::NAN));
        let inf: Num = serde_json::from_str("\"-inf\"").unwrap();
        assert_eq!(inf.0, f64::NEG_INFINITY);
        let null: Num = serde_json::from_str("null").unwrap();
        assert!(null.0.is_nan());
        assert!(serde_json::from_str::<Num>("\"fast\"").is_err());
        assert_eq!(Num(1e-5).to_string(), json(1e-5));
    }

    #[test]
    fn people_see_four_decimals_and_non_zero_deltas() {
        assert_eq!(fmt_metric(0.87124), "0.8712");
        assert_eq!(fmt_metric(f64::NAN), "NaN");
        assert_eq!(fmt_metric(0.00005), "5.000e-5");
        assert_eq!(fmt_delta(0.0), "0");
        assert_eq!(fmt_delta(-0.01), "-0.0100");
        assert_eq!(fmt_delta(1e-12), "+1.00e-12");
    }
}
