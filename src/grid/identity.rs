//! Run identity: a canonical JSON form of a run's config, its short SHA-256, and a readable
//! name built from the values the grid varied.
//!
//! The canonical form is what makes an id the same on any machine and in any invocation:
//! keys sorted, no whitespace, floats in their shortest round-trip form (ryu: `0.00001`, `1e-7`,
//! `1.0`; `-0.0` written as `0.0`), integers without a decimal point. It is computed from the
//! typed `Spec`, so `lr = 1` and `lr = 1.0` in a file give the same id. Changing this file
//! changes every run id: the golden tests below fail when that happens.
//!
//! The config alone does not decide what a run computes: its data files and the code's
//! numerics do too. So the hashed text is the config's canonical JSON without `data.dir` (where
//! the files lie is not what they hold) and `select.rank` (how replicates are ranked), then `#`,
//! then
//! `{"data_files":...,"numerics":N}`: the SHA-256 of each data file by its role in the data
//! set (`train`, `test_labels`, ...), or `"unread"` when the files could not be read (a plan
//! made where the data is not: its ids are provisional), and [`numerics_version`] of its model.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Value;

use crate::spec::schema::fmt_float;
use crate::spec::{ModelKind, Spec};

/// Top-level keys that never change what a run computes.
/// `schedule` only decides where a run stops: the epochs it trains are the same computation.
const NOT_IDENTITY: &[&str] = &[
    "name",
    "description",
    "launch",
    "schedule",
    "grid",
    "repeats",
];
/// Keys that only change evaluation: runs differing only here share one trained model.
const EVALUATION_ONLY: &[&str] = &["decode", "select"];

/// The ID of a configuration whose replicate 0 has run ID `first_replicate`: every replicate
/// of it gives the same, and it never equals a run ID.
pub fn configuration_id(first_replicate: &str) -> String {
    short_hash(&format!("configuration#{first_replicate}"))
}

/// The readable name of replicate `k` of a configuration named `name`.
pub fn replicate_name(name: &str, k: u32) -> String {
    if name.is_empty() {
        format!("rep{k}")
    } else {
        format!("{name}-rep{k}")
    }
}

/// The TensorBoard run name the grid proposes for replicate `k` of a configuration named
/// `name` (`lr0.0005/r1`): a path under the configuration's name, so that TensorBoard lists
/// a configuration's replicates together and one regex filters or colours them as a group.
/// A run without replicates proposes its own name.
pub fn replicate_log_name(name: &str, k: u32) -> String {
    if name.is_empty() {
        format!("r{k}")
    } else {
        format!("{name}/r{k}")
    }
}

/// Hex digits in an id.
pub const ID_LEN: usize = 12;

/// The version of the training numerics of a model family, part of every training identity:
/// bump a family's (with a line in CHANGELOG.md) with any change that alters what its runs
/// compute from the same config and data, so results of the old code show as stale instead
/// of being ranked with new ones. Per family, so that a change to the translator does not
/// make every finished CNN run stale.
pub fn numerics_version(model: ModelKind) -> u32 {
    match model {
        // 2: test metrics and figures of the best checkpoint under `keep_best`
        // (`select.test_checkpoint`), no longer always of the final weights. 3: gemm's
        // AVX-512 kernels where the CPU has them (other blocking than the AVX2 ones, so
        // other last bits, from which training drifts).
        ModelKind::Cnn | ModelKind::Mlp => 3,
        // 2: the dropped-out embeddings' projection and its gradient in one product per
        // LSTM (last bits of every translator run with dropout). 3: test metrics, figures and
        // decode-only variants of the best checkpoint under `keep_best`. 4: training on the
        // CPU by the hand-written step (packed sequences, its own rounding) with dropout
        // masks hashed from each element's place instead of drawn in sequence.
        ModelKind::Seq2seq => 4,
    }
}

/// What a run's identity knows of the data files it reads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFingerprint {
    /// The files could not be read (a plan made without the data): ids are provisional.
    #[default]
    Unread,
    /// SHA-256 (hex) of each file by its role in the data set (`train`, `test_labels`, ...).
    Files(BTreeMap<String, String>),
}

impl DataFingerprint {
    /// The canonical text of the fingerprint inside the identity.
    fn canonical(&self) -> String {
        match self {
            DataFingerprint::Unread => "\"unread\"".into(),
            DataFingerprint::Files(files) => {
                let t: toml::map::Map<String, Value> = files
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                canonical_json(&Value::Table(t))
            }
        }
    }
}

/// `(id, training_id)` of a resolved run config reading `data` under the current numerics.
pub fn run_ids(config: &Spec, data: &DataFingerprint) -> Result<(String, String), String> {
    let v = Value::try_from(config).map_err(|e| e.to_string())?;
    ids_of_value(&v, data, numerics_version(config.model.kind))
}

/// `(id, training_id)` of a run config already serialised to TOML exactly as `Spec`
/// serialises it, reading `data` under numerics version `numerics`.
pub fn ids_of_value(
    v: &Value,
    data: &DataFingerprint,
    numerics: u32,
) -> Result<(String, String), String> {
    let Value::Table(t) = v else {
        return Err("a spec serialises to a table".into());
    };
    let mut keys: Vec<&String> = t.keys().filter(|k| is_identity_key(k)).collect();
    keys.sort();
    let pieces: Vec<(&str, String)> = keys
        .into_iter()
        .map(|k| (k.as_str(), piece(k, &t[k])))
        .collect();
    Ok(ids_from_pieces(
        pieces.iter().map(|(k, p)| (*k, p.as_str())),
        &beyond_config(data, numerics),
    ))
}

/// The identity text that is not the config: data fingerprint and numerics version.
pub fn beyond_config(data: &DataFingerprint, numerics: u32) -> String {
    format!(
        "#{{\"data_files\":{},\"numerics\":{numerics}}}",
        data.canonical()
    )
}

/// Whether a top-level key is part of a run's identity at all.
pub fn is_identity_key(key: &str) -> bool {
    !NOT_IDENTITY.contains(&key)
}

/// The canonical text of one top-level entry, `"key":value`; `data` without its `dir`
/// (the data files' contents are in the identity, their location is not).
pub fn piece(key: &str, v: &Value) -> String {
    let mut out = String::new();
    write_str(key, &mut out);
    out.push(':');
    let skip: Vec<&str> = NOT_IDENTITY_FIELDS
        .iter()
        .filter(|(section, _)| *section == key)
        .map(|(_, field)| *field)
        .collect();
    match v {
        Value::Table(t) if skip.iter().any(|f| t.contains_key(*f)) => {
            let mut t = t.clone();
            for f in skip {
                t.remove(f);
            }
            write_canonical(&Value::Table(t), &mut out);
        }
        _ => write_canonical(v, &mut out),
    }
    out
}

/// Fields of a section that never change what a run computes: where the data lies, and how
/// the experiment ranks configurations of replicates.
const NOT_IDENTITY_FIELDS: &[(&str, &str)] = &[("data", "dir"), ("select", "rank")];

/// `(id, training_id)` from the pieces of the identity keys, sorted by key, and the
/// [`beyond_config`] text. Joined the pieces are exactly `canonical_json` of the table
/// without the excluded keys and fields, so the grid can reuse the pieces of sections a run
/// does not change.
pub fn ids_from_pieces<'a>(
    pieces: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    beyond: &str,
) -> (String, String) {
    let join = |skip: &[&str]| {
        let mut text = String::from("{");
        let mut first = true;
        for (k, p) in pieces.clone() {
            if skip.contains(&k) {
                continue;
            }
            if !first {
                text.push(',');
            }
            first = false;
            text.push_str(p);
        }
        text.push('}');
        text.push_str(beyond);
        text
    };
    (short_hash(&join(&[])), short_hash(&join(EVALUATION_ONLY)))
}

/// The first [`ID_LEN`] hex digits of the SHA-256 of `text`.
pub fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(ID_LEN);
    for b in digest.iter().take(ID_LEN / 2) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The canonical JSON text of a TOML value.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => write_str(s, out),
        Value::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) if f.is_finite() => out.push_str(&fmt_float(*f)),
        // JSON has no NaN or infinity; a quoted word keeps the text valid and distinct.
        Value::Float(f) => write_str(&fmt_float(*f), out),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Datetime(d) => write_str(&d.to_string(), out),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Table(t) => {
            // Sorted explicitly: the map's own order depends on toml's features.
            let mut keys: Vec<&String> = t.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                write_canonical(&t[k], out);
            }
            out.push('}');
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // serde_json's escaping of a plain string cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}")));
    }
}

/// A short, filesystem-safe name from the varied values: `adam-lr0.0005`,
/// `attention-general-strategy-beam`; `run` when nothing varies.
pub fn run_name(varied: &BTreeMap<String, Value>) -> String {
    let tokens: Vec<String> = varied.iter().map(|(k, v)| token(k, v)).collect();
    sanitize(&tokens.join("-"))
}

fn token(key: &str, v: &Value) -> String {
    let segs: Vec<&str> = key.split('.').collect();
    let last = segs.last().copied().unwrap_or(key);
    // `model.hidden.0` -> `hidden0`: an index alone says nothing.
    let label = match (last.parse::<usize>(), segs.len()) {
        (Ok(_), n) if n >= 2 => format!("{}{last}", segs[n - 2]),
        _ => last.to_string(),
    };
    match v {
        Value::String(s) if last == "kind" => s.clone(),
        Value::String(s) => format!("{label}-{s}"),
        Value::Boolean(true) => label,
        Value::Boolean(false) => format!("no-{label}"),
        Value::Integer(i) => format!("{label}{i}"),
        Value::Float(f) => format!("{label}{}", name_float(*f)),
        Value::Array(a)
            if a.iter()
                .all(|x| matches!(x, Value::Integer(_) | Value::Float(_))) =>
        {
            let parts: Vec<String> = a
                .iter()
                .map(|x| match x {
                    Value::Integer(i) => i.to_string(),
                    Value::Float(f) => name_float(*f),
                    _ => String::new(),
                })
                .collect();
            format!("{label}{}", parts.join("x"))
        }
        other => format!("{label}-{}", &short_hash(&canonical_json(other))[..6]),
    }
}

/// Floats in names: the shortest form, or 4 significant digits when that is long (samples).
fn name_float(f: f64) -> String {
    let s = fmt_float(f);
    if s.len() > 8 { format!("{f:.3e}") } else { s }
}

fn sanitize(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while s.contains("..") {
        s = s.replace("..", ".");
    }
    let s = s.trim_start_matches(['.', '-']);
    let s: String = s.chars().take(80).collect();
    let s = s.trim_end_matches(['.', '-', '_']);
    if s.is_empty() {
        "run".into()
    } else {
        s.to_string()
    }
}

/// Makes names unique in order: the second `x` becomes `x-2`, the third `x-3`.
pub fn unique_names(names: Vec<String>) -> Vec<String> {
    let mut used: HashSet<String> = HashSet::with_capacity(names.len());
    let originals: HashSet<String> = names.iter().cloned().collect();
    names
        .into_iter()
        .map(|n| {
            if used.insert(n.clone()) {
                return n;
            }
            let mut k = 2;
            loop {
                let candidate = format!("{n}-{k}");
                if !used.contains(&candidate) && !originals.contains(&candidate) {
                    used.insert(candidate.clone());
                    return candidate;
                }
                k += 1;
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varied(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn canonical_json_is_pinned() {
        let v: Value = toml::from_str(
            r#"
            z = 1
            a = { y = 0.0005, x = -0.0, w = 1.0, v = 1e-5 }
            s = "tab\there"
            l = [true, 3, 2.5]
            "#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"v":0.00001,"w":1.0,"x":0.0,"y":0.0005},"l":[true,3,2.5],"s":"tab\there","z":1}"#
        );
    }

    #[test]
    fn section_pieces_join_to_the_canonical_text() {
        let spec = Spec::default();
        let Value::Table(mut t) = Value::try_from(&spec).unwrap() else {
            unreachable!()
        };
        for k in NOT_IDENTITY {
            t.remove(*k);
        }
        if let Some(Value::Table(d)) = t.get_mut("data") {
            d.remove("dir");
        }
        let beyond = format!(
            "#{{\"data_files\":\"unread\",\"numerics\":{}}}",
            numerics_version(ModelKind::Cnn)
        );
        let id = short_hash(&(canonical_json(&Value::Table(t.clone())) + &beyond));
        for k in EVALUATION_ONLY {
            t.remove(*k);
        }
        let tid = short_hash(&(canonical_json(&Value::Table(t)) + &beyond));
        assert_eq!(run_ids(&spec, &DataFingerprint::Unread).unwrap(), (id, tid));
    }

    #[test]
    fn short_hash_is_pinned() {
        // SHA-256("") starts e3b0c44298fc...
        assert_eq!(short_hash(""), "e3b0c44298fc");
        assert_eq!(short_hash("{}").len(), ID_LEN);
    }

    #[test]
    fn golden_ids_of_the_default_spec() {
        // If this fails, every existing run directory would be orphaned: change it only on
        // purpose (a new field in Spec changes ids too) and say so in the commit.
        let (id, training_id) = run_ids(&Spec::default(), &DataFingerprint::Unread).unwrap();
        assert_eq!((id.as_str(), training_id.as_str()), GOLDEN_DEFAULT);
    }

    // Changed on purpose with data fingerprints and numerics versions (CHANGELOG: one break of
    // the id scheme); before it was ("f922d871f51a", "c9dd7099f8a3"). Then with CNN numerics
    // version 2 (test metrics of the best checkpoint); before ("d3e0370740e3", "8b06a160adb7").
    // Then with CNN numerics version 3 (gemm's AVX-512 kernels); before ("a85cdbeb52e0",
    // "f9e673d9f14c").
    const GOLDEN_DEFAULT: (&str, &str) = ("e75542b9c36c", "6eead2da0cee");

    fn files(pairs: &[(&str, &str)]) -> DataFingerprint {
        DataFingerprint::Files(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn data_contents_and_numerics_are_in_the_identity_but_not_the_data_dir() {
        let spec = Spec::default();
        let v = Value::try_from(&spec).unwrap();
        let a = files(&[("train", "aa"), ("test", "bb")]);
        let ids = |d: &DataFingerprint, n: u32| ids_of_value(&v, d, n).unwrap();
        let base = ids(&a, numerics_version(ModelKind::Cnn));
        let changed = files(&[("train", "aa"), ("test", "cc")]);
        assert_ne!(ids(&changed, numerics_version(ModelKind::Cnn)).1, base.1);
        assert_ne!(
            ids(&DataFingerprint::Unread, numerics_version(ModelKind::Cnn)).1,
            base.1
        );
        assert_ne!(ids(&a, numerics_version(ModelKind::Cnn) + 1).1, base.1);
        let mut moved = spec.clone();
        moved.data.dir = "/somewhere/else".into();
        let mv = Value::try_from(&moved).unwrap();
        assert_eq!(
            ids_of_value(&mv, &a, numerics_version(ModelKind::Cnn)).unwrap(),
            base
        );
    }

    #[test]
    fn ids_ignore_name_launch_and_decode_only_for_training() {
        let base = Spec::default();
        let (id, tid) = run_ids(&base, &DataFingerprint::Unread).unwrap();
        let mut other = base.clone();
        other.name = "elsewhere".into();
        other.description = "x".into();
        other.launch.jobs = 8;
        other.schedule.kind = crate::spec::ScheduleKind::SuccessiveHalving;
        other.schedule.min_epochs = 2;
        assert_eq!(
            run_ids(&other, &DataFingerprint::Unread).unwrap(),
            (id.clone(), tid.clone())
        );
        let mut beam = base.clone();
        beam.decode.beam_width = 3;
        let (bid, btid) = run_ids(&beam, &DataFingerprint::Unread).unwrap();
        assert_ne!(bid, id);
        assert_eq!(btid, tid);
        let mut lr = base.clone();
        lr.optimizer.lr = 0.01;
        let (lid, ltid) = run_ids(&lr, &DataFingerprint::Unread).unwrap();
        assert_ne!(lid, id);
        assert_ne!(ltid, tid);
    }

    #[test]
    fn names_read_like_the_varied_values() {
        let v = varied(&[
            ("optimizer.kind", Value::String("adam".into())),
            ("optimizer.lr", Value::Float(0.0005)),
        ]);
        assert_eq!(run_name(&v), "adam-lr0.0005");
        let v = varied(&[
            ("decode.strategy", Value::String("beam".into())),
            ("model.attention", Value::String("general".into())),
        ]);
        assert_eq!(run_name(&v), "strategy-beam-attention-general");
        let v = varied(&[("optimizer.lr", Value::Float(0.000123456789))]);
        assert_eq!(run_name(&v), "lr1.235e-4");
        let v = varied(&[(
            "model.hidden",
            Value::Array(vec![Value::Integer(600), Value::Integer(120)]),
        )]);
        assert_eq!(run_name(&v), "hidden600x120");
        let v = varied(&[("data.dir", Value::String("../../etc".into()))]);
        assert_eq!(run_name(&v), "dir-._._etc");
        assert_eq!(run_name(&BTreeMap::new()), "run");
        let long: BTreeMap<String, Value> = (0..20)
            .map(|i| (format!("k{i:02}"), Value::String("vv".into())))
            .collect();
        let name = run_name(&long);
        assert!(name.len() <= 80 && !name.ends_with('-'), "{name}");
    }

    #[test]
    fn unique_names_add_suffixes() {
        let names = vec!["a".into(), "a".into(), "a-2".into(), "a".into()];
        assert_eq!(unique_names(names), vec!["a", "a-3", "a-2", "a-4"]);
    }
}
