//! `orchestrate predict` through the real binary on small trained runs: its predictions are
//! what the runs' own evaluation recorded (test accuracy of the classifier, the dev
//! translations of `samples.md`), and each error is one line with its exit code.

mod util;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use util::{Output, Sandbox, mini_cnn_spec};

const TEST_IMAGES: &str = "data/fashion-mnist-mini/t10k-images-idx3-ubyte.gz";
const TEST_LABELS: &str = "data/fashion-mnist-mini/t10k-labels-idx1-ubyte.gz";

/// Runs `orchestrate ARGS` with `input` on stdin.
fn run_with_stdin(t: &Sandbox, args: &[&str], input: &str) -> Output {
    let mut child = t
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Output::from_process(format!("{} < stdin", args.join(" ")), t.path(), out)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The value of `tag` the run recorded last in `metrics.jsonl`.
fn recorded(run_dir: &Path, tag: &str) -> f64 {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .rfind(|v| v["tag"] == tag)
        .unwrap_or_else(|| panic!("no {tag}"))["value"]
        .as_f64()
        .unwrap()
}

/// The winner's directory and its summary.
fn winner(t: &Sandbox, experiment: &str) -> (std::path::PathBuf, serde_json::Value) {
    let exp = t.exp_dir(experiment);
    let id = json(&exp.join("summary.json"))["winner"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = exp.join(&id);
    let summary = json(&dir.join("summary.json"));
    (dir, summary)
}

#[test]
fn predicted_classes_of_the_test_images_give_the_recorded_test_accuracy() {
    let t = Sandbox::with_data();
    t.write(
        "mini.toml",
        &mini_cnn_spec(
            "mini",
            300,
            3,
            "",
            "[grid]\n\"optimizer.lr\" = [0.001, 0.003]\n",
        ),
    );
    t.run(&["run", "mini.toml", "--jobs", "2"]).ok();
    let (dir, summary) = winner(&t, "mini");
    let id = dir.file_name().unwrap().to_str().unwrap().to_string();

    // The final weights are the ones test was evaluated with.
    let out = t.run(&[
        "predict",
        "mini",
        "--images",
        TEST_IMAGES,
        "--checkpoint",
        "final",
    ]);
    out.ok()
        .stderr_has(&format!("run {id}"))
        .stderr_has("weights of epoch 3");
    let classes: Vec<u8> = out
        .stdout
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let (index, class) = l.split_once('\t').unwrap();
            assert_eq!(index, i.to_string());
            class.parse().unwrap()
        })
        .collect();
    let labels = orchestrate::data::idx::read_idx(&t.path().join(TEST_LABELS), 1)
        .unwrap()
        .data;
    assert_eq!(classes.len(), labels.len(), "one line per image");
    // The spec evaluates test on its first 100 images.
    let correct = (0..100).filter(|&i| classes[i] == labels[i]).count();
    assert_eq!(
        correct as f64 / 100.0,
        recorded(&dir, "test/accuracy"),
        "{}",
        out.report()
    );

    // By default the kept best checkpoint, the epoch the summary ranks the run by; the same
    // run named by its spec, its id prefix or its name.
    let best_epoch = summary["metrics"]["best_epoch"].as_u64().unwrap();
    let name = summary["run"]["name"].as_str().unwrap();
    for target in [
        "mini.toml".to_string(),
        format!("mini/{}", &id[..6]),
        format!("mini/{name}"),
    ] {
        t.run(&["predict", &target, "--images", TEST_IMAGES, "--json"])
            .ok()
            .stderr_has(&format!("run {id} ({name}), weights of epoch {best_epoch}"));
    }
    let out = t.run(&["predict", "mini", "--images", TEST_IMAGES, "--json"]);
    let first: serde_json::Value =
        serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["index"], 0);
    assert_eq!(first["run"], id.as_str());
    let p: Vec<f64> = first["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(p.len(), 10);
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{p:?}");
    let argmax = (0..10).fold(0, |b, i| if p[i] > p[b] { i } else { b });
    assert_eq!(first["class"], argmax);

    // Errors: one line, the documented code, and nothing else on stdout.
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &["predict", "mini", "--input", "hola"],
            2,
            "is a cnn model: it classifies images",
        ),
        (
            &["predict", "mini/nosuch", "--images", TEST_IMAGES],
            2,
            "no run `nosuch` in experiment",
        ),
        (
            &["predict", "nosuch", "--images", TEST_IMAGES],
            2,
            "no experiment `nosuch`",
        ),
        (
            &["predict", "mini", "--images", TEST_LABELS],
            4,
            "t10k-labels-idx1-ubyte.gz: bad magic number",
        ),
        (
            &["predict", "mini", "--images", "missing.idx"],
            4,
            "missing.idx: data file not found",
        ),
        (
            &["predict", "mini", "--images", "mini.toml"],
            4,
            "mini.toml: bad magic number",
        ),
    ];
    for (args, code, message) in cases {
        let out = t.run(args);
        out.expect_code(code).stderr_has(message);
        assert!(out.stdout.is_empty(), "{}", out.report());
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.report());
    }

    // A run without checkpoints (here removed) cannot predict.
    std::fs::remove_dir_all(dir.join("checkpoints")).unwrap();
    t.run(&["predict", "mini", "--images", TEST_IMAGES])
        .expect_code(2)
        .stderr_has(&format!("run {id} ({name}) has no checkpoint"));
}

#[test]
fn a_run_that_kept_no_best_checkpoint_loads_its_final_one() {
    let t = Sandbox::with_data();
    t.write(
        "final.toml",
        &mini_cnn_spec("final", 200, 2, "checkpoint = { keep_best = false }", ""),
    );
    t.run(&["run", "final.toml"]).ok();
    t.run(&["predict", "final", "--images", TEST_IMAGES])
        .ok()
        .stderr_has("weights of epoch 2");
    t.run(&[
        "predict",
        "final",
        "--images",
        TEST_IMAGES,
        "--checkpoint",
        "best",
    ])
    .expect_code(2)
    .stderr_has(
        "kept no best checkpoint (train.checkpoint.keep_best = false); use --checkpoint final",
    );
}

/// The dev translations a run wrote to `samples.md`: (source, prediction) per row.
fn samples(run_dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(run_dir.join("artifacts/samples.md"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| #") && !l.starts_with("| ---"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            (cells[1].to_string(), cells[3].to_string())
        })
        .collect()
}

#[test]
fn translations_of_dev_sentences_are_the_ones_the_runs_wrote() {
    let t = Sandbox::new();
    // A copy of the data, so that the test can change it.
    std::fs::create_dir(t.path().join("pairs")).unwrap();
    for f in ["train-eng-spa.txt", "val-eng-spa.txt", "test-eng-spa.txt"] {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/spa-eng-mini")
            .join(f);
        std::fs::copy(from, t.path().join("pairs").join(f)).unwrap();
    }
    let spec = std::fs::read_to_string(t.path().join("experiments/q3_smoke.toml"))
        .unwrap()
        .replace("dir = \"data/spa-eng-mini\"", "dir = \"pairs\"");
    t.write("q3.toml", &spec);
    t.run(&["run", "q3.toml", "--jobs", "2"]).ok();
    let exp = t.exp_dir("q3_smoke");

    // Each run's dev sentences decoded with its own settings from the weights it was tested
    // on (predict's default; its samples show them): the best epoch by dev error rate, which
    // need not be the last. The beam runs are decode-only, loading their sibling's checkpoint.
    for name in [
        "strategy-greedy-attention-general",
        "strategy-beam-attention-general",
        "strategy-beam-attention-none",
    ] {
        let dir = util::runs::run_dirs(&exp)
            .into_iter()
            .find(|d| json(&d.join("plan.json"))["name"] == name)
            .unwrap();
        let rows = samples(&dir);
        assert!(rows.len() >= 10, "{rows:?}");
        let sources: String = rows.iter().map(|(s, _)| format!("{s}\n")).collect();
        let target = format!("q3_smoke/{name}");
        let tested = json(&dir.join("summary.json"))["metrics"]["test_epoch"]
            .as_u64()
            .unwrap();
        let out = run_with_stdin(&t, &["predict", &target], &sources);
        out.ok().stderr_has(&format!("weights of epoch {tested}"));
        let got: Vec<&str> = out.stdout.lines().collect();
        let want: Vec<&str> = rows.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(got, want, "{name}\n{}", out.report());
    }

    let out = t.run(&[
        "predict",
        "q3_smoke",
        "--input",
        "Tom tiene un perro.",
        "--json",
    ]);
    let line: serde_json::Value = serde_json::from_str(out.ok().stdout.trim()).unwrap();
    assert_eq!(line["input"], "Tom tiene un perro.");
    assert!(line["translation"].is_string(), "{line}");
    assert_eq!(out.stdout.lines().count(), 1);

    t.run(&["predict", "q3_smoke", "--images", TEST_IMAGES])
        .expect_code(2)
        .stderr_has("is a seq2seq model: it translates sentences");

    // Another training file would give other vocabularies: refused, naming what changed.
    let train = t.path().join("pairs/train-eng-spa.txt");
    let mut text = std::fs::read_to_string(&train).unwrap();
    text.push_str("zebra\tcebra\t42\n");
    std::fs::write(&train, text).unwrap();
    // (A stale run is never the winner, so the run is named.)
    let out = t.run(&[
        "predict",
        "q3_smoke/strategy-greedy-attention-general",
        "--input",
        "hola",
    ]);
    out.expect_code(4).stderr_has("data changed: train");
    assert!(out.stdout.is_empty());
}
