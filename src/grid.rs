// TEMP: replaced at merge (the core engineer's grid expansion).
//! Minimal stand-in for `grid::expand`: cartesian axes only, sha256 run ids.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::spec::{GridSpec, Spec, set_dotted};

/// One run of an expanded grid.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    pub index: usize,
    pub id: String,
    pub training_id: String,
    pub name: String,
    pub varied: BTreeMap<String, toml::Value>,
    pub config: Spec,
}

/// Why a grid could not be expanded.
#[derive(Debug, thiserror::Error)]
#[error("grid: {0}")]
pub struct GridError(pub String);

/// Expands the cartesian axes of `spec.grid` into runs.
pub fn expand(spec: &Spec) -> Result<Vec<RunPlan>, GridError> {
    let mut combos: Vec<BTreeMap<String, toml::Value>> = vec![BTreeMap::new()];
    for (key, values) in &spec.grid.axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(key.clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    let mut base = spec.clone();
    base.grid = GridSpec::default();
    let base_value = toml::Value::try_from(&base).map_err(|e| GridError(e.to_string()))?;
    combos
        .into_iter()
        .enumerate()
        .map(|(index, varied)| {
            let mut v = base_value.clone();
            if let Some(t) = v.as_table_mut() {
                for (k, val) in &varied {
                    set_dotted(t, k, val.clone());
                }
            }
            let config: Spec = v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| GridError(e.to_string()))?;
            let name = varied
                .iter()
                .map(|(k, v)| format!("{}={}", k.rsplit('.').next().unwrap_or(k), v))
                .collect::<Vec<_>>()
                .join(",");
            Ok(RunPlan {
                index,
                id: hash(&v, &["name", "description", "launch", "grid"]),
                training_id: hash(
                    &v,
                    &["name", "description", "launch", "grid", "decode", "select"],
                ),
                name: if name.is_empty() {
                    "default".into()
                } else {
                    name
                },
                varied,
                config,
            })
        })
        .collect()
}

fn hash(v: &toml::Value, drop: &[&str]) -> String {
    let mut v = v.clone();
    if let Some(t) = v.as_table_mut() {
        for d in drop {
            t.remove(*d);
        }
    }
    let digest = Sha256::digest(toml::to_string(&v).unwrap_or_default().as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}
