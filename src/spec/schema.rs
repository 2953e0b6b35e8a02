//! The set of known keys, dotted-path access to TOML values, and "did you mean" suggestions.
//!
//! The key set is not written out by hand: it is the serialised `Spec::default()`, so a field
//! added to `types.rs` is known at once. Free-form tables (grid axes, variants, random
//! parameters) are skipped here and checked by the grid against the same key set.

use std::sync::OnceLock;

use figment::value::{Dict, Value as FigValue};
use toml::Value;

use super::types::Spec;

/// Subtrees whose keys are user-chosen (dotted spec keys), not fields.
const FREE_FORM: &[&str] = &[
    "grid.axes",
    "grid.zip",
    "grid.variant",
    "grid.random.params",
];

/// Top-level keys of a spec file.
pub const TOP_LEVEL: &[&str] = &[
    "name",
    "description",
    "seed",
    "repeats",
    "replicate",
    "data",
    "model",
    "optimizer",
    "train",
    "decode",
    "select",
    "launch",
    "schedule",
    "grid",
];

/// The serialised default spec: every known key with its default value.
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        // Serialising the built-in defaults cannot fail: they are plain numbers and strings.
        let mut v = Value::try_from(Spec::default()).unwrap_or(Value::Table(Default::default()));
        // `Option` fields that default to `None` are skipped by the serialiser; add them back.
        let _ = set_path(&mut v, "grid.random.seed", Value::Integer(0));
        // Fields left out at their defaults so that run ids of specs without them stay put.
        if let Value::Table(t) = &mut v {
            t.insert("repeats".into(), Value::Integer(1));
            t.insert("replicate".into(), Value::Integer(0));
        }
        if let Some(Value::Table(t)) = v.get_mut("select") {
            t.insert("rank".into(), Value::String("mean".into()));
            t.insert("test_checkpoint".into(), Value::String("best".into()));
        }
        if let (Value::Table(t), Ok(schedule)) = (
            &mut v,
            Value::try_from(crate::spec::ScheduleSpec::default()),
        ) {
            t.insert("schedule".into(), schedule);
        }
        v
    })
}

/// The value at a dotted key; numeric segments index arrays (`model.conv.0.kernel`).
pub fn get_path<'a>(root: &'a Value, key: &str) -> Option<&'a Value> {
    let mut cur = root;
    for seg in key.split('.') {
        cur = match cur {
            Value::Table(t) => t.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Replaces the value at an existing dotted key; explains what is missing on failure.
pub fn set_path(root: &mut Value, key: &str, new: Value) -> Result<(), String> {
    let segs: Vec<&str> = key.split('.').collect();
    let mut cur = root;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        cur = match cur {
            Value::Table(t) => {
                if last {
                    t.insert((*seg).to_string(), new);
                    return Ok(());
                }
                t.get_mut(*seg)
                    .ok_or_else(|| format!("no key `{}`", segs[..=i].join(".")))?
            }
            Value::Array(a) => {
                let len = a.len();
                let idx = seg
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n < len)
                    .ok_or_else(|| {
                        format!(
                            "`{}` is a list of {len}; `{seg}` is not an index in it",
                            segs[..i].join(".")
                        )
                    })?;
                if last {
                    a[idx] = new;
                    return Ok(());
                }
                &mut a[idx]
            }
            _ => return Err(format!("`{}` is not a table", segs[..i].join("."))),
        };
    }
    Ok(())
}

/// Whether `key` names a field of the spec (a leaf or a table), per the schema.
pub fn is_known_key(key: &str) -> bool {
    schema_at(key).is_some()
}

/// The schema value for a dotted key; array indices map to the element schema.
fn schema_at(key: &str) -> Option<&'static Value> {
    let mut cur = schema();
    for seg in key.split('.') {
        cur = match cur {
            Value::Table(t) => t.get(seg)?,
            Value::Array(a) if seg.parse::<usize>().is_ok() => a.first()?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Every dotted key of the schema, tables included, in sorted order.
pub fn all_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut out = Vec::new();
        collect_keys(schema(), "", &mut out);
        out.sort();
        out
    })
}

fn collect_keys(v: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Table(t) = v {
        for (k, child) in t {
            let key = join(prefix, k);
            out.push(key.clone());
            if !FREE_FORM.contains(&key.as_str()) {
                collect_keys(child, &key, out);
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A key the spec does not know, with the closest known key and its allowed siblings.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownKey {
    pub key: String,
    pub suggestion: Option<String>,
    pub allowed: Vec<String>,
}

impl UnknownKey {
    /// The message shown to the user: suggestion first, then what is allowed there.
    pub fn message(&self) -> String {
        let mut m = String::from("unknown key");
        if let Some(s) = &self.suggestion {
            m.push_str(&format!("; did you mean `{s}`?"));
        }
        if !self.allowed.is_empty() {
            let parent = self.key.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
            let place = if parent.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{parent}]")
            };
            m.push_str(&format!(" (allowed {place}: {})", self.allowed.join(", ")));
        }
        m
    }
}

/// Walks a merged figment dictionary against the schema and lists the keys it does not know.
pub fn unknown_keys(merged: &Dict) -> Vec<UnknownKey> {
    let mut out = Vec::new();
    if let Value::Table(schema) = schema() {
        walk_dict(merged, schema, "", &mut out);
    }
    out
}

fn walk_dict(dict: &Dict, schema: &toml::Table, prefix: &str, out: &mut Vec<UnknownKey>) {
    for (k, v) in dict {
        let key = join(prefix, k);
        match schema.get(k) {
            None => out.push(UnknownKey {
                suggestion: suggest_near(k, prefix, schema),
                allowed: schema.keys().cloned().collect(),
                key,
            }),
            Some(_) if FREE_FORM.contains(&key.as_str()) => {}
            Some(Value::Table(sub)) => {
                if let FigValue::Dict(_, d) = v {
                    walk_dict(d, sub, &key, out);
                }
            }
            Some(Value::Array(elems)) => {
                // Arrays of tables (`[[model.conv]]`): check each element against the first
                // default element.
                if let (Some(Value::Table(elem)), FigValue::Array(_, items)) = (elems.first(), v) {
                    for (i, item) in items.iter().enumerate() {
                        if let FigValue::Dict(_, d) = item {
                            walk_dict(d, elem, &format!("{key}.{i}"), out);
                        }
                    }
                }
            }
            Some(_) => {}
        }
    }
}

/// The closest sibling key, else a key elsewhere in the spec with the same last segment.
fn suggest_near(unknown: &str, prefix: &str, siblings: &toml::Table) -> Option<String> {
    if let Some(s) = closest(unknown, siblings.keys().map(String::as_str)) {
        return Some(join(prefix, s));
    }
    let full = join(prefix, unknown);
    suggest_key(&full)
}

/// Suggests a known dotted key for an unknown one: nearest by edit distance over whole keys,
/// else one whose last segment is the unknown key's last segment.
pub fn suggest_key(unknown: &str) -> Option<String> {
    let keys = all_keys();
    if let Some(s) = closest(unknown, keys.iter().map(String::as_str)) {
        return Some(s.to_string());
    }
    let last = unknown.rsplit('.').next().unwrap_or(unknown);
    let same_leaf: Vec<&String> = keys
        .iter()
        .filter(|k| k.rsplit('.').next() == Some(last))
        .collect();
    // Ambiguous leaves (`max_len` is in both `data` and `decode`) get no suggestion.
    if same_leaf.len() == 1 {
        return Some(same_leaf[0].clone());
    }
    None
}

/// The candidate nearest to `word` within a distance that scales with its length.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A float in its shortest round-trip form (`0.00001`, `1e-7`, `1.0`); `-0.0` becomes `0.0`.
pub fn fmt_float(f: f64) -> String {
    let f = if f == 0.0 { 0.0 } else { f };
    // serde_json writes finite floats with ryu: shortest round-trip digits, a stable format.
    if f.is_finite() {
        serde_json::to_string(&f).unwrap_or_else(|_| format!("{f:?}"))
    } else if f.is_nan() {
        "nan".into()
    } else if f > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

/// A TOML value as a user writes it, floats in their shortest form.
pub fn fmt_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => fmt_float(*f),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(fmt_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Table(t) => {
            let items: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{k} = {}", fmt_value(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("lr", "lr"), 0);
        assert_eq!(edit_distance("lrr", "lr"), 1);
        assert_eq!(edit_distance("optimiser", "optimizer"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggestions_find_misspelt_and_misplaced_keys() {
        assert_eq!(
            suggest_key("optimizer.lrr").as_deref(),
            Some("optimizer.lr")
        );
        assert_eq!(suggest_key("optimiser.lr").as_deref(), Some("optimizer.lr"));
        assert_eq!(suggest_key("lr").as_deref(), Some("optimizer.lr"));
        assert_eq!(
            suggest_key("train.patience").as_deref(),
            Some("train.early_stopping.patience")
        );
        assert_eq!(suggest_key("zzzzzz"), None);
    }

    #[test]
    fn paths_index_tables_and_arrays() {
        let v = schema();
        assert!(get_path(v, "optimizer.lr").is_some());
        assert_eq!(get_path(v, "model.conv.0.kernel"), Some(&Value::Integer(5)));
        assert!(get_path(v, "model.conv.9.kernel").is_none());
        assert!(is_known_key("model.conv.7.kernel"));
        assert!(is_known_key("grid.random.seed"));
        assert!(!is_known_key("optimizer.learning_rate"));
    }

    #[test]
    fn floats_print_in_shortest_form() {
        assert_eq!(fmt_float(0.00001), "0.00001");
        assert_eq!(fmt_float(1e-7), "1e-7");
        assert_eq!(fmt_float(0.0005), "0.0005");
        assert_eq!(fmt_float(1.0), "1.0");
        assert_eq!(fmt_float(-0.0), "0.0");
    }
}
