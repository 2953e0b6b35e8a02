//! Grid expansion: a validated `Spec` with a `[grid]` becomes the ordered list of runs.
//!
//! Order is deterministic: `[[grid.variant]]` tables outermost, then the cartesian axes and
//! zip groups sorted by key (a zip group sorts by its first key) with the last one varying
//! fastest, then `[grid.random]` samples innermost (the same samples for every point, so
//! points are compared on equal draws). The run count is checked first, against
//! `launch.max_runs` and [`MAX_GRID_RUNS`], without building anything; then each value is
//! checked on its own, so a bad value is reported against its axis before any run is built.

pub mod identity;
pub mod load;
pub mod random;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::spec::schema::{self, fmt_value, get_path, set_path};
use crate::spec::validate;
use crate::spec::{DataSpec, Distribution, GridSpec, Spec};
use identity::DataFingerprint;

pub use load::{LoadError, expand_resolved, expand_resolved_with, load_runs, load_runs_with};

/// One run of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    /// Position in the grid's order, from 0.
    pub index: usize,
    /// 12 hex digits of the hash of the canonical config; the run directory's name.
    pub id: String,
    /// Like `id` without `decode` and `select`: runs that share it share one trained model.
    pub training_id: String,
    /// Readable, unique within the grid: `adam-lr0.0005`.
    pub name: String,
    /// The TensorBoard run name the grid proposes: `name`, or `<configuration>/r<k>` for
    /// replicates; the run's `plan.json` fixes the one it keeps (`store::tensorboard`).
    #[serde(default)]
    pub log_name: String,
    /// Dotted key -> value the grid set for this run.
    pub varied: BTreeMap<String, Value>,
    /// The run's resolved config, its grid emptied.
    pub config: Spec,
    /// The data files' hashes that went into the ids.
    #[serde(default)]
    pub data: identity::DataFingerprint,
    /// The run's configuration and replicate index, when the spec has `repeats > 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate: Option<Replicate>,
}

/// A run's place among the replicates of one configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicate {
    /// The configuration's ID ([`identity::configuration_id`]): the same for every replicate.
    pub configuration: String,
    /// 0-based replicate index.
    pub index: u32,
}

/// Why a grid cannot be expanded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GridError {
    /// A grid entry is malformed: unknown key, empty axis, bad value for its key...
    #[error("`{at}`: {message}")]
    Entry { at: String, message: String },
    /// The grid would launch more runs than `launch.max_runs` allows.
    #[error(
        "the grid expands to {} runs, more than launch.max_runs = {max}; \
         shrink the grid or raise launch.max_runs", fmt_count(*runs)
    )]
    TooManyRuns { runs: u128, max: usize },
    /// The grid has more runs than any experiment may have ([`MAX_GRID_RUNS`]).
    #[error(
        "the grid expands to {} runs, more than the {ceiling} runs one experiment may have \
         (launch.max_runs = {max} cannot raise that: every run's config is held in memory); \
         shrink the grid or split it into several experiments", fmt_count(*runs)
    )]
    OverCeiling {
        runs: u128,
        max: usize,
        ceiling: usize,
    },
    /// A combination of values is invalid as a whole.
    #[error("run {index} ({varied}): `{key}` = {value}: {message}")]
    Run {
        index: usize,
        varied: String,
        key: String,
        value: String,
        message: String,
    },
    /// Two runs resolve to the same config.
    #[error("runs {first} and {second} have the same config (id {id}); remove the duplicate")]
    Duplicate {
        first: usize,
        second: usize,
        id: String,
    },
    /// The spec could not be turned into a TOML value (a bug, not a user error).
    #[error("cannot serialise the spec: {0}")]
    Serialize(String),
}

/// Whether a top-level key belongs to the experiment, not to a run: every key outside run
/// identity, and `replicate`, which `repeats` sets.
fn is_experiment_key(key: &str) -> bool {
    !identity::is_identity_key(key) || key == "replicate"
}

type Assignment = Vec<(String, Value)>;

/// Expands the spec's grid into runs, checking every run's config, without reading data:
/// every run's data fingerprint is [`DataFingerprint::Unread`] (provisional ids).
pub fn expand(spec: &Spec) -> Result<Vec<RunPlan>, GridError> {
    expand_with(spec, &mut |_| DataFingerprint::Unread)
}

/// Expands the spec's grid into runs whose ids include the fingerprint `data` gives of each
/// run's data section (asked once for the base config and again only for runs whose grid
/// values change `data`).
pub fn expand_with(
    spec: &Spec,
    data: &mut dyn FnMut(&DataSpec) -> DataFingerprint,
) -> Result<Vec<RunPlan>, GridError> {
    let mut base_spec = spec.clone();
    base_spec.grid = GridSpec::default();
    let base = Value::try_from(&base_spec).map_err(|e| GridError::Serialize(e.to_string()))?;
    let g = &spec.grid;

    // Counted before anything is built: every run's plan is held at once, and a random
    // search draws its samples up front.
    let repeats = spec.repeats.max(1);
    let total = run_count(g).saturating_mul(repeats as u128);
    let max = spec.launch.max_runs;
    if total > max as u128 {
        return Err(GridError::TooManyRuns { runs: total, max });
    }
    if total > MAX_GRID_RUNS as u128 {
        return Err(GridError::OverCeiling {
            runs: total,
            max,
            ceiling: MAX_GRID_RUNS,
        });
    }
    let dims = build_dims(g, spec.seed)?;
    // Values as the typed spec serialises them (`lr = 1` becomes `1.0`, partial tables get
    // their defaults), so a run's TOML value is its canonical form without a round trip.
    let normalized = check_values(g, &base, &dims)?;
    let Value::Table(base_table) = &base else {
        return Err(GridError::Serialize("a spec serialises to a table".into()));
    };
    // Canonical pieces of the base config: a run recomputes only the sections it changes.
    let mut base_pieces: Vec<(&str, String)> = base_table
        .iter()
        .filter(|(k, _)| identity::is_identity_key(k))
        .map(|(k, v)| (k.as_str(), identity::piece(k, v)))
        .collect();
    base_pieces.sort_by(|a, b| a.0.cmp(b.0));
    let base_data = data(&base_spec.data);
    let base_numerics = identity::numerics_version(base_spec.model.kind);
    let base_beyond = identity::beyond_config(&base_data, base_numerics);

    let total = (total / repeats as u128) as usize;
    let mut runs = Vec::with_capacity(total);
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(total);
    let mut picks = vec![0usize; dims.len()];
    for index in 0..total {
        // Mixed radix, last dimension fastest.
        let mut rest = index;
        for (i, d) in dims.iter().enumerate().rev() {
            picks[i] = rest % d.len();
            rest /= d.len();
        }
        let mut sections: BTreeMap<&str, Value> = BTreeMap::new();
        let mut varied = BTreeMap::new();
        for ((d, n), &p) in dims.iter().zip(&normalized).zip(&picks) {
            for ((k, raw), (_, v)) in d[p].iter().zip(&n[p]) {
                let (top, rest) = match k.split_once('.') {
                    Some((top, rest)) => (top, Some(rest)),
                    None => (k.as_str(), None),
                };
                let Some((top, base_section)) = base_table.get_key_value(top) else {
                    return Err(GridError::Entry {
                        at: format!("grid.{k}"),
                        message: "no such key in the spec".into(),
                    });
                };
                let section = sections
                    .entry(top.as_str())
                    .or_insert_with(|| base_section.clone());
                match rest {
                    None => *section = v.clone(),
                    Some(rest) => {
                        set_path(section, rest, v.clone()).map_err(|m| GridError::Entry {
                            at: format!("grid.{k}"),
                            message: m,
                        })?
                    }
                }
                varied.insert(k.clone(), raw.clone());
            }
        }
        let pieces: Vec<(&str, std::borrow::Cow<str>)> = base_pieces
            .iter()
            .map(|(k, p)| match sections.get(k) {
                Some(v) => (*k, identity::piece(k, v).into()),
                None => (*k, p.as_str().into()),
            })
            .collect();
        let changes_data = sections.contains_key("data");
        let config = build_run(index, &base_spec, sections, &varied)?;
        let numerics = identity::numerics_version(config.model.kind);
        let (run_data, beyond) = if changes_data || numerics != base_numerics {
            let d = if changes_data {
                data(&config.data)
            } else {
                base_data.clone()
            };
            let b = identity::beyond_config(&d, numerics);
            (d, std::borrow::Cow::Owned(b))
        } else {
            (
                base_data.clone(),
                std::borrow::Cow::Borrowed(base_beyond.as_str()),
            )
        };
        let (id, training_id) =
            identity::ids_from_pieces(pieces.iter().map(|(k, p)| (*k, p.as_ref())), &beyond);
        if let Some(&first) = seen.get(&id) {
            return Err(GridError::Duplicate {
                first,
                second: index,
                id,
            });
        }
        seen.insert(id.clone(), index);
        runs.push(RunPlan {
            index,
            id,
            training_id,
            name: identity::run_name(&varied),
            log_name: String::new(),
            varied,
            config,
            data: run_data,
            replicate: None,
        });
    }
    let names = identity::unique_names(runs.iter().map(|r| r.name.clone()).collect());
    for (r, n) in runs.iter_mut().zip(names) {
        r.log_name = n.clone();
        r.name = n;
    }
    if repeats > 1 {
        runs = replicated(runs, repeats)?;
    }
    Ok(runs)
}

/// Each configuration's `repeats` replicates, configuration by configuration; replicate 0 is
/// the configuration's run unchanged, the others differ only in `replicate` (and so in their
/// training seed).
fn replicated(configs: Vec<RunPlan>, repeats: u32) -> Result<Vec<RunPlan>, GridError> {
    let mut out = Vec::with_capacity(configs.len() * repeats as usize);
    for first in configs {
        let configuration = identity::configuration_id(&first.id);
        for k in 0..repeats {
            let mut run = first.clone();
            run.index = out.len();
            run.name = identity::replicate_name(&first.name, k);
            run.log_name = identity::replicate_log_name(&first.name, k);
            run.replicate = Some(Replicate {
                configuration: configuration.clone(),
                index: k,
            });
            if k > 0 {
                run.config.replicate = k;
                let (id, training_id) =
                    identity::run_ids(&run.config, &run.data).map_err(GridError::Serialize)?;
                run.id = id;
                run.training_id = training_id;
            }
            out.push(run);
        }
    }
    Ok(out)
}

/// The most runs one experiment may have, whatever `launch.max_runs` allows. Planning holds
/// every run's resolved config in memory (about 3 KiB each), as do `run`, `status` and
/// `summary`, and each run is a directory: `plan` of 100,000 runs took 1.7 s and 300 MB
/// (measured), and a 10^7-run grid would need 30 GB before its first run.
pub const MAX_GRID_RUNS: usize = 100_000;

/// How many runs the grid expands to, computed without building it: the product of the
/// dimension sizes, [`u128::MAX`] when that overflows.
pub fn run_count(g: &GridSpec) -> u128 {
    let mut sizes = g
        .axes
        .values()
        .map(Vec::len)
        .chain(g.zip.iter().map(|z| z.values().next().map_or(0, Vec::len)))
        .chain((!g.variant.is_empty()).then_some(g.variant.len()))
        .chain((g.random.samples > 0).then_some(g.random.samples));
    sizes
        .try_fold(1u128, |acc, n| acc.checked_mul(n as u128))
        .unwrap_or(u128::MAX)
}

/// A run count as the errors show it.
fn fmt_count(runs: u128) -> String {
    if runs == u128::MAX {
        "more than 10^38".into()
    } else {
        runs.to_string()
    }
}

/// The dimensions of the grid, each a list of alternative assignments, in expansion order.
fn build_dims(g: &GridSpec, seed: u64) -> Result<Vec<Vec<Assignment>>, GridError> {
    let entry = |at: String, message: String| GridError::Entry { at, message };
    let mut sorted: Vec<(String, Vec<Assignment>)> = Vec::new();
    for (k, vals) in &g.axes {
        if vals.is_empty() {
            return Err(entry(
                format!("grid.{k}"),
                "an axis needs at least one value".into(),
            ));
        }
        sorted.push((
            k.clone(),
            vals.iter().map(|v| vec![(k.clone(), v.clone())]).collect(),
        ));
    }
    for (i, group) in g.zip.iter().enumerate() {
        let at = format!("grid.zip.{i}");
        let Some((first, first_vals)) = group.iter().next() else {
            return Err(entry(at, "a zip group needs at least one axis".into()));
        };
        let n = first_vals.len();
        if n == 0 {
            return Err(entry(
                format!("{at}.{first}"),
                "an axis needs at least one value".into(),
            ));
        }
        if let Some((k, v)) = group.iter().find(|(_, v)| v.len() != n) {
            return Err(entry(
                at,
                format!(
                    "axes of a zip group vary together and need equal lengths: \
                     `{first}` has {n} values, `{k}` has {}",
                    v.len()
                ),
            ));
        }
        let options = (0..n)
            .map(|j| {
                group
                    .iter()
                    .map(|(k, v)| (k.clone(), v[j].clone()))
                    .collect()
            })
            .collect();
        sorted.push((first.clone(), options));
    }
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut dims: Vec<Vec<Assignment>> = Vec::new();
    if !g.variant.is_empty() {
        dims.push(
            g.variant
                .iter()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .collect(),
        );
    }
    dims.extend(sorted.into_iter().map(|(_, d)| d));

    let r = &g.random;
    match (r.samples, r.params.is_empty()) {
        (0, true) => {}
        (0, false) => {
            return Err(entry(
                "grid.random.samples".into(),
                "is 0 but grid.random has parameters; set samples = N".into(),
            ));
        }
        (n, true) => {
            return Err(entry(
                "grid.random.samples".into(),
                format!("is {n} but grid.random has no parameters to sample"),
            ));
        }
        (_, false) => {
            for (k, d) in &r.params {
                random::check(d).map_err(|m| entry(format!("grid.random.{k}"), m))?;
            }
            dims.push(random::draw(r, seed));
        }
    }
    Ok(dims)
}

/// Checks every grid key names a run setting, that no key is set by two grid entries, and
/// that each value is valid for its key on its own; returns the dimensions with each value
/// as the typed spec serialises it.
fn check_values(
    g: &GridSpec,
    base: &Value,
    dims: &[Vec<Assignment>],
) -> Result<Vec<Vec<Assignment>>, GridError> {
    let mut keys: Vec<(&str, &'static str)> = Vec::new();
    keys.extend(g.axes.keys().map(|k| (k.as_str(), "an axis")));
    for group in &g.zip {
        keys.extend(group.keys().map(|k| (k.as_str(), "a zip group")));
    }
    keys.extend(g.random.params.keys().map(|k| (k.as_str(), "grid.random")));
    let mut variant_keys: Vec<&str> = g
        .variant
        .iter()
        .flat_map(|v| v.keys())
        .map(String::as_str)
        .collect();
    variant_keys.sort();
    variant_keys.dedup();
    keys.extend(variant_keys.into_iter().map(|k| (k, "a variant")));
    for (k, _) in &keys {
        check_key(k, base)?;
    }
    // One key, or a key and a key inside it, set from two places would depend on the
    // order they are applied in.
    for (i, (a, wa)) in keys.iter().enumerate() {
        for (b, wb) in &keys[i + 1..] {
            let nested =
                a == b || b.starts_with(&format!("{a}.")) || a.starts_with(&format!("{b}."));
            if nested {
                let same = if a == b {
                    String::new()
                } else {
                    format!(" (`{a}` holds `{b}`)")
                };
                return Err(GridError::Entry {
                    at: format!("grid.{b}"),
                    message: format!(
                        "is set both by {wa} and by {wb}{same}; a key may vary in one place only"
                    ),
                });
            }
        }
    }

    for (k, d) in &g.random.params {
        let draws_floats = matches!(
            d,
            Distribution::Uniform { .. } | Distribution::LogUniform { .. }
        );
        if draws_floats && !matches!(get_path(base, k), Some(Value::Float(_))) {
            return Err(GridError::Entry {
                at: format!("grid.random.{k}"),
                message: "draws floats but the key does not take a float; use dist = \"choice\""
                    .into(),
            });
        }
    }

    let mut normalized = Vec::with_capacity(dims.len());
    for d in dims {
        let mut alts = Vec::with_capacity(d.len());
        for alt in d {
            alts.push(normalize_alternative(alt, base)?);
        }
        normalized.push(alts);
    }
    Ok(normalized)
}

/// One alternative over the base config: wrong types and out-of-range values are reported
/// against the grid entry that holds them.
fn normalize_alternative(alt: &Assignment, base: &Value) -> Result<Assignment, GridError> {
    let shown: Vec<String> = alt
        .iter()
        .map(|(k, v)| format!("{k} = {}", fmt_value(v)))
        .collect();
    let at = || match alt.as_slice() {
        [(k, _)] => format!("grid.{k}"),
        _ => format!("grid entry {{ {} }}", shown.join(", ")),
    };
    let mut value = base.clone();
    for (k, v) in alt {
        set_path(&mut value, k, v.clone()).map_err(|m| GridError::Entry {
            at: at(),
            message: m,
        })?;
    }
    let spec: Spec = value
        .try_into()
        .map_err(|e: toml::de::Error| GridError::Entry {
            at: at(),
            message: format!("{}: {}", shown.join(", "), e.message().trim()),
        })?;
    if let Some(v) = validate::check(&spec).into_iter().next() {
        return Err(GridError::Entry {
            at: at(),
            message: format!("`{}` = {}: {}", v.key, v.value, v.message),
        });
    }
    let typed = Value::try_from(&spec).map_err(|e| GridError::Serialize(e.to_string()))?;
    alt.iter()
        .map(|(k, _)| {
            get_path(&typed, k)
                .map(|v| (k.clone(), v.clone()))
                .ok_or_else(|| GridError::Serialize(format!("`{k}` vanished in serialisation")))
        })
        .collect()
}

/// A grid key must name an existing setting that may differ between runs.
fn check_key(key: &str, base: &Value) -> Result<(), GridError> {
    let at = format!("grid.{key}");
    let first = key.split('.').next().unwrap_or(key);
    if is_experiment_key(first) {
        return Err(GridError::Entry {
            at,
            message: format!(
                "`{first}` belongs to the whole experiment and cannot vary between runs"
            ),
        });
    }
    if get_path(base, key).is_some() {
        return Ok(());
    }
    let message = if schema::is_known_key(key) {
        "names a list position the spec does not have".to_string()
    } else {
        match schema::suggest_key(key) {
            Some(s) => format!("no such key in the spec; did you mean `{s}`?"),
            None => "no such key in the spec (see the spec reference in the README)".to_string(),
        }
    };
    Err(GridError::Entry { at, message })
}

/// Builds one run's typed config from the base and the sections the grid changed, and
/// checks it as a whole.
fn build_run(
    index: usize,
    base: &Spec,
    sections: BTreeMap<&str, Value>,
    varied: &BTreeMap<String, Value>,
) -> Result<Spec, GridError> {
    let shown = || {
        let parts: Vec<String> = varied
            .iter()
            .map(|(k, v)| format!("{k} = {}", fmt_value(v)))
            .collect();
        parts.join(", ")
    };
    let fail = |message: String| GridError::Run {
        index,
        varied: shown(),
        key: String::new(),
        value: String::new(),
        message,
    };
    let mut config = base.clone();
    // A run is one replicate; the grid numbers them after expansion.
    config.repeats = 1;
    for (top, v) in sections {
        set_section(&mut config, top, v).map_err(|e| fail(e.message().trim().to_string()))?;
    }
    if let Some(v) = validate::check(&config).into_iter().next() {
        return Err(GridError::Run {
            index,
            varied: shown(),
            key: v.key,
            value: v.value,
            message: v.message,
        });
    }
    Ok(config)
}

/// Replaces one top-level entry of a typed spec with a TOML value. Deserialising one section
/// instead of the whole spec is what keeps 10,000 runs well under a second.
fn set_section(config: &mut Spec, top: &str, v: Value) -> Result<(), toml::de::Error> {
    match top {
        "seed" => config.seed = v.try_into()?,
        "data" => config.data = v.try_into()?,
        "model" => config.model = v.try_into()?,
        "optimizer" => config.optimizer = v.try_into()?,
        "train" => config.train = v.try_into()?,
        "decode" => config.decode = v.try_into()?,
        "select" => config.select = v.try_into()?,
        // Anything added to `Spec` later still works, through the whole spec.
        _ => {
            let mut whole = Value::try_from(&*config)
                .map_err(|e| <toml::de::Error as serde::de::Error>::custom(e.to_string()))?;
            if let Value::Table(t) = &mut whole {
                t.insert(top.to_string(), v);
            }
            *config = whole.try_into()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod replicates;
#[cfg(test)]
mod tests;
