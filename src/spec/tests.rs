//! Layering order, `extends`, environment and `--set` parsing, origins and `--explain`
//! (every bad-spec fixture's message is checked in `grid`'s tests, after expansion).

use std::path::{Path, PathBuf};

use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sets(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A base, a spec extending it, and each layer setting `optimizer.lr` to its own value.
struct Layers {
    _dir: tempfile::TempDir,
    spec: PathBuf,
    base: PathBuf,
}

fn layers(file_sets_lr: bool, base_sets_lr: bool) -> Layers {
    let dir = tempfile::tempdir().unwrap();
    let base_lr = if base_sets_lr { "lr = 0.2\n" } else { "" };
    let base = write(
        dir.path(),
        "base.toml",
        &format!("[optimizer]\nkind = \"sgd\"\n{base_lr}"),
    );
    let file_lr = if file_sets_lr { "lr = 0.3\n" } else { "" };
    let spec = write(
        dir.path(),
        "spec.toml",
        &format!("extends = \"base.toml\"\n[optimizer]\n{file_lr}"),
    );
    Layers {
        _dir: dir,
        spec,
        base,
    }
}

#[test]
fn each_layer_beats_the_one_below() {
    let no_env = env(&[]);
    let lr_env = env(&[("ORCHESTRATE_OPTIMIZER__LR", "0.4")]);
    let lr_set = sets(&["optimizer.lr=0.5"]);

    // defaults only
    let l = layers(false, false);
    let r = resolve(&l.spec, &[], no_env.clone()).unwrap();
    assert_eq!(r.spec.optimizer.lr, Spec::default().optimizer.lr);
    assert_eq!(r.origin("optimizer.lr"), load::DEFAULTS);

    // extends beats defaults
    let l = layers(false, true);
    let r = resolve(&l.spec, &[], no_env.clone()).unwrap();
    assert_eq!(r.spec.optimizer.lr, 0.2);
    assert_eq!(r.origin("optimizer.lr"), l.base.display().to_string());

    // the file beats what it extends
    let l = layers(true, true);
    let r = resolve(&l.spec, &[], no_env.clone()).unwrap();
    assert_eq!(r.spec.optimizer.lr, 0.3);
    assert_eq!(r.origin("optimizer.lr"), l.spec.display().to_string());
    // tables merge key by key: the base's optimizer.kind survives the file's [optimizer]
    assert_eq!(r.spec.optimizer.kind, OptimizerKind::Sgd);

    // the environment beats the file
    let r = resolve(&l.spec, &[], lr_env.clone()).unwrap();
    assert_eq!(r.spec.optimizer.lr, 0.4);
    assert_eq!(
        r.origin("optimizer.lr"),
        "environment variable ORCHESTRATE_OPTIMIZER__LR"
    );

    // --set beats the environment; the last --set wins
    let r = resolve(&l.spec, &lr_set, lr_env.clone()).unwrap();
    assert_eq!(r.spec.optimizer.lr, 0.5);
    assert_eq!(r.origin("optimizer.lr"), "--set optimizer.lr=0.5");
    let two = sets(&["optimizer.lr=0.5", "optimizer.lr=0.6"]);
    assert_eq!(
        resolve(&l.spec, &two, lr_env).unwrap().spec.optimizer.lr,
        0.6
    );
}

#[test]
fn environment_keys_nest_on_double_underscores_and_ignore_other_variables() {
    let l = layers(false, false);
    let e = env(&[
        ("ORCHESTRATE_TRAIN__EARLY_STOPPING__PATIENCE", "3"),
        ("ORCHESTRATE_DATA__DIR", "some/dir"),
        ("ORCHESTRATE_SEED", "7"),
        // the launcher's run identity is not a spec key
        ("ORCHESTRATE_RUN_ID", "abc"),
        ("OTHER_OPTIMIZER__LR", "9"),
    ]);
    let s = resolve(&l.spec, &[], e).unwrap().spec;
    assert_eq!(s.train.early_stopping.patience, 3);
    assert_eq!(s.data.dir, "some/dir");
    assert_eq!(s.seed, 7);
}

#[test]
fn set_values_parse_as_toml_else_as_strings() {
    let l = layers(false, false);
    let s = resolve(
        &l.spec,
        &sets(&[
            "model.hidden=[32, 16]",
            "data.dir=data/other",
            "train.device=\"cuda:1\"",
            "select.evaluate_test=false",
            "grid.optimizer.lr=[0.1, 0.01]",
            "grid.\"train.batch_size\"=[8]",
        ]),
        env(&[]),
    )
    .unwrap()
    .spec;
    assert_eq!(s.model.hidden, vec![32, 16]);
    assert_eq!(s.data.dir, "data/other");
    assert_eq!(s.train.device, "cuda:1");
    assert!(!s.select.evaluate_test);
    let axes: Vec<&String> = s.grid.axes.keys().collect();
    assert_eq!(axes, ["optimizer.lr", "train.batch_size"]);
}

#[test]
fn malformed_set_flags_are_usage_errors() {
    let l = layers(false, false);
    for bad in ["optimizer.lr", "=3", "a b=1"] {
        let e = resolve(&l.spec, &sets(&[bad]), env(&[])).err().unwrap();
        assert!(e.is_unreadable_input(), "{bad}: {e}");
    }
}

#[test]
fn the_experiment_name_defaults_to_the_file_stem() {
    let l = layers(false, false);
    assert_eq!(resolve(&l.spec, &[], env(&[])).unwrap().spec.name, "spec");
}

#[test]
fn grid_syntax_forms_all_land_in_grid_spec() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "g.toml",
        r#"
[grid]
"optimizer.lr" = [0.1]
model.dropout = [0.1, 0.2]

[[grid.zip]]
train.epochs = [1, 2]
"train.batch_size" = [8, 16]

[[grid.variant]]
optimizer = { kind = "sgd", momentum = 0.9 }

[grid.random]
samples = 2
seed = 5
[grid.random."optimizer.l2_decay"]
dist = "uniform"
low = 0.0
high = 0.1
[grid.random.params."model.activation"]
dist = "choice"
values = ["relu", "tanh"]
"#,
    );
    let g = resolve(&p, &[], env(&[])).unwrap().spec.grid;
    assert_eq!(
        g.axes.keys().collect::<Vec<_>>(),
        ["model.dropout", "optimizer.lr"]
    );
    assert_eq!(
        g.zip[0].keys().collect::<Vec<_>>(),
        ["train.batch_size", "train.epochs"]
    );
    assert_eq!(
        g.variant[0].keys().collect::<Vec<_>>(),
        ["optimizer.kind", "optimizer.momentum"]
    );
    assert_eq!(g.random.samples, 2);
    assert_eq!(g.random.seed, Some(5));
    assert_eq!(
        g.random.params.keys().collect::<Vec<_>>(),
        ["model.activation", "optimizer.l2_decay"]
    );
}

#[test]
fn resolved_config_prints_and_loads_back_to_the_same_spec() {
    let path = Path::new("experiments/q3_attention.toml");
    let spec = resolve(path, &[], env(&[])).unwrap().spec;
    let dir = tempfile::tempdir().unwrap();
    let printed = write(
        dir.path(),
        "printed.toml",
        &toml::to_string_pretty(&spec).unwrap(),
    );
    assert_eq!(resolve(&printed, &[], env(&[])).unwrap().spec, spec);
}

#[test]
fn explain_names_the_source_and_the_grid() {
    let path = Path::new("experiments/q2_grid.toml");
    let r = resolve(path, &sets(&["train.epochs=3"]), env(&[])).unwrap();
    insta::assert_snapshot!("explain_lr", r.explain("optimizer.lr").unwrap());
    insta::assert_snapshot!("explain_train", r.explain("train").unwrap());
    assert_eq!(
        r.explain("optimizer.lrr").unwrap_err(),
        "no key `optimizer.lrr` in the spec; did you mean `optimizer.lr`?"
    );
}
