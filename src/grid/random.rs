//! Seeded random search: `[grid.random]` draws `samples` points from per-key distributions.
//!
//! One ChaCha8 stream seeded by `grid.random.seed` (else the experiment seed); each sample
//! draws its keys in sorted order, so the same spec gives the same samples everywhere.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use toml::Value;

use crate::spec::{Distribution, RandomSpec};

/// Why a distribution cannot be sampled.
pub fn check(dist: &Distribution) -> Result<(), String> {
    match dist {
        Distribution::Uniform { low, high } => {
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(format!(
                    "uniform needs finite low < high, got low = {low}, high = {high}"
                ));
            }
        }
        Distribution::LogUniform { low, high } => {
            if !(*low > 0.0 && high.is_finite() && low < high) {
                return Err(format!(
                    "log-uniform needs 0 < low < high, got low = {low}, high = {high}"
                ));
            }
        }
        Distribution::Choice { values } => {
            if values.is_empty() {
                return Err("choice needs at least one value".into());
            }
        }
    }
    Ok(())
}

/// The `samples` assignments of `random`, each a list of (dotted key, value).
pub fn draw(random: &RandomSpec, experiment_seed: u64) -> Vec<Vec<(String, Value)>> {
    let mut rng = ChaCha8Rng::seed_from_u64(random.seed.unwrap_or(experiment_seed));
    (0..random.samples)
        .map(|_| {
            random
                .params
                .iter()
                .map(|(key, dist)| (key.clone(), sample(dist, &mut rng)))
                .collect()
        })
        .collect()
}

fn sample(dist: &Distribution, rng: &mut ChaCha8Rng) -> Value {
    match dist {
        Distribution::Uniform { low, high } => {
            let u: f64 = rng.random();
            Value::Float(low + (high - low) * u)
        }
        Distribution::LogUniform { low, high } => {
            let u: f64 = rng.random();
            let (a, b) = (low.ln(), high.ln());
            Value::Float((a + (b - a) * u).exp())
        }
        Distribution::Choice { values } => {
            // Drawn as u64 so 32- and 64-bit machines pick the same index.
            let i = rng.random_range(0..values.len() as u64) as usize;
            values[i].clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec(seed: Option<u64>) -> RandomSpec {
        let mut params = BTreeMap::new();
        params.insert(
            "optimizer.lr".to_string(),
            Distribution::LogUniform {
                low: 1e-5,
                high: 1e-1,
            },
        );
        params.insert(
            "model.dropout".to_string(),
            Distribution::Uniform {
                low: 0.0,
                high: 0.5,
            },
        );
        params.insert(
            "optimizer.kind".to_string(),
            Distribution::Choice {
                values: vec![Value::String("sgd".into()), Value::String("adam".into())],
            },
        );
        RandomSpec {
            samples: 20,
            seed,
            params,
        }
    }

    #[test]
    fn same_seed_same_samples_other_seed_other_samples() {
        let a = draw(&spec(None), 7);
        assert_eq!(a, draw(&spec(None), 7));
        assert_eq!(
            a,
            draw(&spec(Some(7)), 99),
            "random.seed overrides the experiment seed"
        );
        assert_ne!(a, draw(&spec(None), 8));
        assert_eq!(a.len(), 20);
    }

    #[test]
    fn samples_stay_in_their_ranges() {
        for s in draw(&spec(Some(1)), 0) {
            for (k, v) in s {
                match (k.as_str(), v) {
                    ("optimizer.lr", Value::Float(f)) => assert!((1e-5..1e-1).contains(&f)),
                    ("model.dropout", Value::Float(f)) => assert!((0.0..0.5).contains(&f)),
                    ("optimizer.kind", Value::String(s)) => assert!(s == "sgd" || s == "adam"),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(
            check(&Distribution::Uniform {
                low: 1.0,
                high: 1.0
            })
            .is_err()
        );
        assert!(
            check(&Distribution::LogUniform {
                low: 0.0,
                high: 1.0
            })
            .is_err()
        );
        assert!(check(&Distribution::Choice { values: vec![] }).is_err());
        assert!(
            check(&Distribution::LogUniform {
                low: 1e-4,
                high: 1.0
            })
            .is_ok()
        );
    }
}
