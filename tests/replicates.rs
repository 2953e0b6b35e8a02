//! Replicates through the real binary: `repeats = 3` trains three runs per configuration,
//! the summary groups them with statistics a user can recompute from the per-run values, the
//! result does not depend on `--jobs`, and `best` emits the configuration.

mod util;

use serde_json::Value;
use util::Sandbox;

/// Two learning rates, three replicates each, one epoch on 200 images.
fn spec(name: &str, extra_select: &str) -> String {
    util::mini_cnn_spec(
        name,
        200,
        1,
        "",
        &format!(
            "[select]\nmetric = \"dev/accuracy\"\nmode = \"max\"\n{extra_select}\n\
             [grid]\n\"optimizer.lr\" = [0.001, 0.01]\n"
        ),
    )
    // `repeats` is a top-level key: it must come before the first table.
    .replacen("seed = 7\n", "seed = 7\nrepeats = 3\n", 1)
}

fn summary(sb: &Sandbox, exp: &str) -> Value {
    let text = std::fs::read_to_string(sb.exp_dir(exp).join("summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

/// Mean, sample sd and 95% t half-width computed here, independently of `src/stats`
/// (t quantile for 2 degrees of freedom: 4.302652729911275, from SciPy).
fn by_hand(xs: &[f64]) -> (f64, f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    assert_eq!(xs.len(), 3);
    (mean, sd, 4.302652729911275 * sd / n.sqrt())
}

#[test]
fn replicates_are_grouped_into_configurations_with_their_statistics() {
    let sb = Sandbox::with_data();
    sb.write("rep.toml", &spec("rep", ""));
    sb.run(&["plan", "rep.toml"])
        .ok()
        .stdout_has("lr0.001-rep0")
        .stdout_has("lr0.01-rep2");
    sb.run(&[
        "run",
        "rep.toml",
        "--jobs",
        "2",
        "--threads",
        "1",
        "--quiet",
    ])
    .ok();
    let s = summary(&sb, "rep");
    let runs: Vec<&Value> = s["runs"].as_array().unwrap().iter().collect();
    assert_eq!(runs.len(), 6, "{s:#}");

    // TensorBoard lists each configuration's replicates under its name, so that one regex
    // (`lr0.001/`) selects, and groups the colours of, one configuration; each HParams row is
    // a replicate, named as in the run selector.
    if let Some(tb) = util::tb::tb_check(&sb.exp_dir("rep").join("tb"), &[]) {
        let mut selector: Vec<&str> = tb["run_selector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        selector.sort();
        let want = [
            "lr0.001/r0",
            "lr0.001/r1",
            "lr0.001/r2",
            "lr0.01/r0",
            "lr0.01/r1",
            "lr0.01/r2",
        ];
        assert_eq!(selector, want, "{tb:#}");
        let mut rows: Vec<&str> = tb["session_groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        rows.sort();
        assert_eq!(rows, want);
        // The replicates of a configuration are its runs: same lr, their own seeds.
        for g in tb["session_groups"].as_array().unwrap() {
            let lr = g["hparams"]["optimizer.lr"].as_f64().unwrap();
            let name = g["name"].as_str().unwrap();
            assert!(name.starts_with(&format!("lr{lr}/")), "{g}");
        }
    }
    let configs = s["configurations"].as_array().unwrap();
    assert_eq!(configs.len(), 2);
    for c in configs {
        let ids: Vec<&str> = c["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 3);
        // Each replicate trained with its own seed: the three runs differ.
        let best: Vec<f64> = ids
            .iter()
            .map(|id| {
                let r = runs.iter().find(|r| r["id"] == *id).unwrap();
                assert_eq!(r["replicate"]["configuration"], c["id"]);
                f(&r["metrics"]["best"])
            })
            .collect();
        let losses: std::collections::BTreeSet<String> = ids
            .iter()
            .map(|id| {
                let r = runs.iter().find(|r| r["id"] == *id).unwrap();
                r["metrics"]["final"]["train/loss"].to_string()
            })
            .collect();
        assert_eq!(
            losses.len(),
            3,
            "replicates trained identically: {losses:?}"
        );
        let (mean, sd, half) = by_hand(&best);
        let sel = &c["select"];
        assert_eq!(sel["n"], 3);
        assert!((f(&sel["mean"]) - mean).abs() < 1e-12, "{sel} vs {mean}");
        assert!((f(&sel["sd"]) - sd).abs() < 1e-12, "{sel} vs {sd}");
        let ci = sel["ci95"].as_array().unwrap();
        assert!((f(&ci[0]) - (mean - half)).abs() < 1e-9, "{sel}");
        assert!((f(&ci[1]) - (mean + half)).abs() < 1e-9, "{sel}");
        assert!(c["test"]["test/accuracy"]["n"] == 3);
    }
    // The ranking is by the mean; the summary says whether the top two can be told apart.
    let means: Vec<f64> = configs.iter().map(|c| f(&c["select"]["mean"])).collect();
    assert!(means[0] >= means[1]);
    assert_eq!(configs[0]["winner"], true);
    let conf = &s["confidence"];
    assert_eq!(conf["runner_up"], configs[1]["id"]);
    let md = std::fs::read_to_string(sb.exp_dir("rep").join("summary.md")).unwrap();
    assert!(md.contains("## Configurations"), "{md}");
    let verdict = if conf["distinguishable"] == true {
        "with 95% confidence"
    } else {
        "NOT distinguishable"
    };
    assert!(md.contains(verdict), "{md}");

    // `best` emits the configuration; running it plans the same configuration.
    let best = sb.run(&["best", "rep"]).ok().stdout.clone();
    assert!(best.contains("repeats = 3"), "{best}");
    assert!(!best.contains("replicate ="), "{best}");
    sb.write("best.toml", &best);
    let plan = sb.run(&["plan", "best.toml", "--json"]).ok().stdout.clone();
    let winner_id = configs[0]["id"].as_str().unwrap();
    assert_eq!(plan.matches(winner_id).count(), 3, "{plan}");
}

#[test]
fn the_summary_of_replicates_does_not_depend_on_jobs() {
    let sb = Sandbox::with_data();
    sb.write("a.toml", &spec("a", ""));
    sb.run(&["run", "a.toml", "--jobs", "1", "--threads", "1", "--quiet"])
        .ok();
    let one = std::fs::read(sb.exp_dir("a").join("summary.json")).unwrap();
    let one_md = std::fs::read(sb.exp_dir("a").join("summary.md")).unwrap();
    std::fs::remove_dir_all(sb.exp_dir("a")).unwrap();
    sb.run(&["run", "a.toml", "--jobs", "2", "--threads", "1", "--quiet"])
        .ok();
    let two = std::fs::read(sb.exp_dir("a").join("summary.json")).unwrap();
    assert!(one == two, "summary.json differs between --jobs 1 and 2");
    assert!(one_md == std::fs::read(sb.exp_dir("a").join("summary.md")).unwrap());
}

#[test]
fn lower_bound_ranking_and_bad_repeats_are_spec_choices() {
    let sb = Sandbox::new();
    sb.write(
        "bad.toml",
        &spec("bad", "").replacen("repeats = 3", "repeats = 0", 1),
    );
    sb.run(&["plan", "bad.toml"])
        .expect_code(3)
        .stderr_has("bad.toml")
        .stderr_has("repeats")
        .stderr_has("must be between 1 and 1000");
    sb.write("lb.toml", &spec("lb", "rank = \"lower_bound\"\n"));
    sb.write("mean.toml", &spec("lb", ""));
    // How configurations are ranked is not part of any run's identity.
    let lb = sb.run(&["plan", "lb.toml", "--json"]).ok().stdout.clone();
    let mean = sb.run(&["plan", "mean.toml", "--json"]).ok().stdout.clone();
    let ids = |s: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(s).unwrap();
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&lb).len(), 6);
    assert_eq!(ids(&lb), ids(&mean));
}
