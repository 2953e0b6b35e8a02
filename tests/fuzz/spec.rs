//! The spec loader: TOML text (seeded from the shipped experiments and the spec fixtures,
//! edited line by line), `--set` flags and `ORCHESTRATE_*` environment variables, passed as
//! data to `spec::resolve` so that no test touches the process environment. Property: it
//! never panics, and it returns a spec (whose grid expands or is refused with a typed error)
//! or a typed error each of whose lines names the source of the problem: a file, a flag, a
//! variable, or the built-in defaults.

use std::path::{Path, PathBuf};

use orchestrate::error::Error;
use orchestrate::grid::{LoadError, expand_resolved};
use orchestrate::spec::error::escape_controls;
use orchestrate::spec::load::DEFAULTS;
use orchestrate::spec::resolve;
use orchestrate::spec::schema::{all_keys, fmt_value, get_path, schema};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use toml::Value;

use crate::harness::{fuzz, variant};
use crate::mutate::{Edit, apply, edits};

/// A copy of `experiments/` (with `base/`) and of the spec fixtures, so `extends` resolves;
/// the seeds (directory, text), the shipped experiments first, and how many those are.
fn sandbox() -> (tempfile::TempDir, Vec<(PathBuf, String)>, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = crate::harness::scratch();
    let mut seeds = Vec::new();
    let mut shipped = 0;
    for (from, to) in [
        ("experiments", "experiments"),
        ("experiments/base", "experiments/base"),
        ("tests/fixtures/specs", "specs"),
    ] {
        let dest = tmp.path().join(to);
        std::fs::create_dir_all(&dest).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(from))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        for p in files {
            let text = std::fs::read_to_string(&p).unwrap();
            std::fs::write(dest.join(p.file_name().unwrap()), &text).unwrap();
            seeds.push((dest.clone(), text));
        }
        if from.starts_with("experiments") {
            shipped = seeds.len();
        }
    }
    (tmp, seeds, shipped)
}

/// Keys a user could write: every key of the schema, grid axes in their three spellings,
/// the grid's tables, and near misses.
fn key() -> impl Strategy<Value = String> {
    let known = all_keys().to_vec();
    let axes = all_keys()
        .iter()
        .filter(|k| !k.starts_with("grid") && k.contains('.'))
        .cloned()
        .collect::<Vec<_>>();
    prop_oneof![
        6 => select(known),
        2 => select(axes.clone()).prop_map(|k| format!("grid.\"{k}\"")),
        1 => select(axes.clone()).prop_map(|k| format!("grid.{k}")),
        1 => select(axes).prop_map(|k| format!("grid.axes.\"{k}\"")),
        1 => select(&[
            "extends", "grid.zip", "grid.variant", "grid.random", "grid.random.samples", "grid.random.seed",
            "grid.random.\"optimizer.lr\"", "grid.random.params.\"optimizer.lr\".dist", "model.conv.0.kernel",
            "model.conv.7.stride", "optimizer.lrr", "Model.kind", "data..dir", "\"\"", "a.b.c.d.e.f",
            "train.epochs.x", "launch.slurm.mem", "launch.slurm.extra_args", "select.metric",
        ][..]).prop_map(String::from),
    ]
}

/// TOML values: edge numbers, odd floats, hostile strings, empty and mixed arrays, tables,
/// dates, and the values each key really takes.
fn value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        select(
            &[
                "0",
                "1",
                "-1",
                "2",
                "3",
                "28",
                "1000",
                "1001",
                "9223372036854775807",
                "-9223372036854775808",
                "0.0",
                "-0.0",
                "1e-5",
                "0.5",
                "1.0",
                "1e308",
                "nan",
                "inf",
                "-inf",
                "true",
                "false",
                "\"\"",
                "\"adam\"",
                "\"sgd\"",
                "\"cnn\"",
                "\"mlp\"",
                "\"seq2seq\"",
                "\"same\"",
                "\"valid\"",
                "\"max\"",
                "\"min\"",
                "\"idx\"",
                "\"npz\"",
                "\"tsv-pairs\"",
                "\"dev/accuracy\"",
                "\"dev/nosuch\"",
                "\"cpu\"",
                "\"cuda:0\"",
                "\"slurm\"",
                "\"local\"",
                "\"8G\\ntouch /tmp/canary\"",
                "\"$(touch /tmp/x)\"",
                "\"a\\u0000b\"",
                "\"base/homework_cnn.toml\"",
                "\"../experiments/smoke.toml\"",
                "\"fuzz.toml\"",
                "\"no_such.toml\"",
                "\".\"",
                "'literal'",
                "\"\"\"multi\nline\"\"\"",
                "1979-05-27T07:32:00Z",
                "1979-05-27",
                "07:32:00",
                "0x10",
                "0o7",
                "0b1",
                "1_000",
            ][..]
        )
        .prop_map(String::from),
        "[a-z0-9_./ -]{0,12}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
    ];
    scalar.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec((key(), inner), 0..3).prop_map(|kv| {
                let kv: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", kv.join(", "))
            }),
        ]
    })
}

/// Values near each key's default (the default, a neighbour, a flipped flag), so that many
/// inputs stay valid and reach the grid expansion.
fn plausible(k: &str, pick: usize) -> Option<String> {
    let v = get_path(schema(), k)?;
    let near = match v {
        Value::Integer(i) => [i.to_string(), (i + 1).to_string(), (i * 2).to_string()],
        Value::Float(f) => [
            fmt_value(v),
            fmt_value(&Value::Float(f * 2.0)),
            fmt_value(&Value::Float(f / 10.0)),
        ],
        Value::Boolean(b) => [b.to_string(), (!b).to_string(), b.to_string()],
        Value::Table(_) => return None,
        other => [fmt_value(other), fmt_value(other), fmt_value(other)],
    };
    Some(near[pick % 3].clone())
}

/// `key = value` with a value the key plausibly takes: a setting, or a grid axis over two.
fn assignment() -> impl Strategy<Value = (String, String)> {
    let leaves: Vec<String> = all_keys()
        .iter()
        .filter(|k| {
            !k.starts_with("grid") && !k.starts_with("launch.max") && plausible(k, 0).is_some()
        })
        .cloned()
        .collect();
    (select(leaves), 0usize..3, 0usize..3, any::<bool>()).prop_map(|(k, a, b, axis)| {
        let (va, vb) = (plausible(&k, a).unwrap(), plausible(&k, b).unwrap());
        if axis && k.contains('.') {
            (format!("grid.\"{k}\""), format!("[{va}, {vb}]"))
        } else {
            (k, va)
        }
    })
}

/// One edit of the spec text.
#[derive(Debug, Clone)]
enum TextEdit {
    /// A new line before line `n` (of the lines above the first table when `top`): `key =
    /// value`, a table header, or anything.
    Insert(Index, String, bool),
    /// The right-hand side of the `n`th assignment replaced.
    Replace(Index, String),
    /// Line `n` removed.
    Delete(Index),
    /// Line `n` written twice.
    Duplicate(Index),
    /// Bytes of the text edited (it may stop being UTF-8 or TOML).
    Bytes(Vec<Edit>),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    let line = prop_oneof![
        4 => (key(), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        4 => assignment().prop_map(|(k, v)| format!("{k} = {v}")),
        2 => select(&[
            "[data]", "[model]", "[[model.conv]]", "[optimizer]", "[train]", "[grid]", "[grid.random]",
            "[[grid.zip]]", "[[grid.variant]]", "[launch.slurm]", "[select]", "[decode]", "[nosuch]",
            "[data", "= 1", "\"unterminated", "[[model.conv]]\nkernel = 99\nchannels = 0",
        ][..]).prop_map(String::from),
    ];
    prop_oneof![
        4 => (any::<Index>(), line, prop::bool::weighted(0.7)).prop_map(|(i, l, top)| TextEdit::Insert(i, l, top)),
        4 => (any::<Index>(), value()).prop_map(|(i, v)| TextEdit::Replace(i, v)),
        2 => any::<Index>().prop_map(TextEdit::Delete),
        1 => any::<Index>().prop_map(TextEdit::Duplicate),
        1 => edits(3).prop_map(TextEdit::Bytes),
    ]
}

fn edit_text(text: &str, edits: &[TextEdit]) -> Vec<u8> {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut raw = Vec::new();
    for e in edits {
        let n = lines.len();
        match e {
            TextEdit::Insert(i, l, top) => {
                let end = if *top {
                    lines.iter().position(|l| l.starts_with('[')).unwrap_or(n)
                } else {
                    n
                };
                lines.insert(i.index(end + 1), l.clone());
            }
            TextEdit::Replace(i, v) => {
                let assignments: Vec<usize> = (0..n).filter(|&k| lines[k].contains('=')).collect();
                if !assignments.is_empty() {
                    let k = assignments[i.index(assignments.len())];
                    let lhs = lines[k].split('=').next().unwrap_or("").to_string();
                    lines[k] = format!("{lhs}= {v}");
                }
            }
            TextEdit::Delete(i) if n > 0 => {
                lines.remove(i.index(n));
            }
            TextEdit::Duplicate(i) if n > 0 => {
                let l = lines[i.index(n)].clone();
                lines.insert(i.index(n), l);
            }
            TextEdit::Bytes(b) => raw.extend(b.iter().cloned()),
            _ => {}
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    apply(text.into_bytes(), &raw, &[])
}

/// `ORCHESTRATE_<SECTION>__<KEY>` for a dotted key, sometimes spelled wrong.
fn env_var(key: &str) -> String {
    format!(
        "ORCHESTRATE_{}",
        key.replace('"', "").replace('.', "__").to_uppercase()
    )
}

fn env_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => key().prop_map(|k| (env_var(&k), k)).prop_map(|(v, _)| v),
        1 => select(&[
            "ORCHESTRATE_", "ORCHESTRATE___", "ORCHESTRATE_RUN_ID", "ORCHESTRATE_TRAIN", "ORCHESTRATE_GRID__",
            "ORCHESTRATE_train__epochs", "ORCHESTRATE_TRAIN____EPOCHS", "ORCHESTRATE_GRID__OPTIMIZER__LR",
        ][..]).prop_map(String::from),
    ]
}

/// A flag or variable value as a user types it: TOML, or a bare word.
fn raw_value() -> impl Strategy<Value = String> {
    prop_oneof![4 => value(), 1 => ".{0,16}"]
}

/// A `--set` argument: usually `key=value`, sometimes malformed.
fn set_arg() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (key(), raw_value()).prop_map(|(k, v)| format!("{k}={v}")),
        6 => assignment().prop_map(|(k, v)| format!("{k}={v}")),
        1 => select(&["", "=", "=1", "train.epochs", "train.epochs==2", " = ", "a b=1", "[x]=1", "x.=1"][..])
            .prop_map(String::from),
        1 => ".{0,24}",
    ]
}

#[derive(Debug, Clone)]
struct Case {
    seed: usize,
    edits: Vec<TextEdit>,
    sets: Vec<String>,
    env: Vec<(String, String)>,
    explain: String,
}

#[test]
fn fuzz_spec_loader() {
    let (tmp, seeds, shipped) = sandbox();
    let n = seeds.len();
    let case = (
        // The shipped experiments are valid, most fixtures are not: start from the former more.
        prop_oneof![3 => 0..shipped, 1 => shipped..n],
        proptest::collection::vec(text_edit(), 0..4),
        proptest::collection::vec(set_arg(), 0..3),
        proptest::collection::vec(
            prop_oneof![
                (env_name(), raw_value()),
                assignment()
                    .prop_filter("the grid is not set from the environment", |(k, _)| !k
                        .starts_with("grid"))
                    .prop_map(|(k, v)| (env_var(&k), v)),
            ],
            0..3,
        ),
        key(),
    )
        .prop_map(|(seed, edits, sets, env, explain)| Case {
            seed,
            edits,
            sets,
            env,
            explain,
        });
    let sandbox_path = tmp.path().to_string_lossy().into_owned();
    fuzz("spec", 4000, case, |c, tally| {
        let (dir, text) = &seeds[c.seed];
        let file = dir.join("fuzz.toml");
        std::fs::write(&file, edit_text(text, &c.edits)).unwrap();
        match resolve(&file, &c.sets, c.env.clone()) {
            Ok(resolved) => {
                let _ = resolved.explain(&c.explain);
                let _ = resolved.origin(&c.explain);
                match expand_resolved(&resolved) {
                    Ok(runs) => {
                        tally.add("ok");
                        prop_assert!(!runs.is_empty());
                        prop_assert!(runs.len() <= resolved.spec.launch.max_runs);
                    }
                    Err(e) => {
                        let kind = match &e {
                            LoadError::Grid { source, .. } => variant(source.as_ref()),
                            LoadError::Spec(other) => variant(other),
                        };
                        tally.add(format!("grid {kind}"));
                        names_sources(e, &sandbox_path, &c)?;
                    }
                }
            }
            Err(e) => {
                tally.add(variant(&e));
                names_sources(e.into(), &sandbox_path, &c)?;
            }
        }
        Ok(())
    });
}

/// Every line of the error names where the problem came from, and it maps to the usage or
/// the invalid-spec exit code.
fn names_sources(e: LoadError, sandbox: &str, c: &Case) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    prop_assert!(!msg.trim().is_empty(), "empty error: {:?}", e);
    for line in msg.lines() {
        let named = line.contains(sandbox)
            || line.contains(DEFAULTS)
            || c.sets.iter().any(|s| {
                line.contains(&format!("--set {s}"))
                    || line.contains(&format!("--set {}", escape_controls(s)))
            })
            || c.env
                .iter()
                .any(|(name, _)| line.contains(&format!("environment variable {name}")));
        prop_assert!(
            named,
            "a line of the error names no source: {:?}\nwhole error:\n{}",
            line,
            msg
        );
    }
    let code = Error::from(e).exit_code();
    prop_assert!(code == 2 || code == 3, "exit code {} for {}", code, msg);
    Ok(())
}
