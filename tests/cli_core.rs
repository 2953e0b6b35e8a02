//! The declarative core through the real binary: `plan`, `config`, `inspect` and bad specs.

mod util;

use util::Sandbox;

#[test]
fn plan_lists_the_runs_of_the_grid() {
    let sb = Sandbox::new();
    let out = sb.run(&["plan", "experiments/q2_grid.toml"]);
    out.ok();
    insta::assert_snapshot!("plan_q2_grid", out.stdout);
    assert!(!sb.path().join("runs").exists(), "plan writes nothing");
}

#[test]
fn plan_shows_what_runs_already_holds() {
    let sb = Sandbox::new();
    let json = sb.run(&["plan", "experiments/q2_grid.toml", "--json"]);
    json.ok();
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let id = plan["runs"][1]["id"].as_str().unwrap().to_string();
    sb.write(
        &format!("runs/q2_grid/{id}/status.json"),
        r#"{"state":"running","attempts":1,"epoch":3}"#,
    );
    let out = sb.run(&["plan", "experiments/q2_grid.toml"]);
    out.ok().stdout_has("running (epoch 3)");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[3].contains(&id) && lines[3].contains("running"),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].contains("new") && lines[4].contains("new"),
        "{}",
        out.stdout
    );

    // Another runs directory holds nothing for this experiment.
    sb.run(&[
        "plan",
        "experiments/q2_grid.toml",
        "--runs-dir",
        "elsewhere",
    ])
    .ok()
    .stdout_has("in elsewhere/q2_grid");
}

#[test]
fn plan_json_is_for_machines() {
    let sb = Sandbox::new();
    let out = sb.run(&["plan", "experiments/q3_attention.toml", "--json"]);
    out.ok();
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["experiment"], "q3_attention");
    let runs = plan["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r["index"], i);
        let id = r["id"].as_str().unwrap();
        assert_eq!(id.len(), 12);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(r["state"], "new");
    }
    // greedy and beam runs of one attention setting share one trained model
    assert_eq!(runs[0]["training_id"], runs[2]["training_id"]);
    assert_ne!(runs[0]["training_id"], runs[1]["training_id"]);
    assert_eq!(runs[3]["varied"]["decode.strategy"], "beam");
    assert_eq!(runs[3]["varied"]["model.attention"], "general");
}

#[test]
fn plan_takes_overrides() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "plan",
        "experiments/smoke.toml",
        "--set",
        "grid.\"optimizer.lr\"=[0.1, 0.2, 0.3]",
    ]);
    out.ok().stdout_has("smoke: 3 runs").stdout_has("lr0.3");
}

#[test]
fn config_prints_the_resolved_spec() {
    let sb = Sandbox::new();
    let out = sb.run(&[
        "config",
        "experiments/smoke.toml",
        "--set",
        "train.epochs=5",
    ]);
    out.ok();
    let v: toml::Table = out.stdout.parse().unwrap();
    assert_eq!(v["name"].as_str(), Some("smoke"));
    assert_eq!(v["train"]["epochs"].as_integer(), Some(5));
    assert_eq!(v["train"]["batch_size"].as_integer(), Some(32));
    assert_eq!(
        v["model"]["conv"][0]["kernel"].as_integer(),
        Some(5),
        "from the base file"
    );
    assert_eq!(
        v["decode"]["beam_width"].as_integer(),
        Some(5),
        "a built-in default"
    );
    // The printed spec is itself a spec that loads to the same thing.
    sb.write("printed.toml", &out.stdout);
    let again = sb.run(&["config", "printed.toml"]);
    again.ok();
    assert_eq!(again.stdout, out.stdout);
}

#[test]
fn config_explain_names_each_source() {
    let sb = Sandbox::new();
    let spec = "experiments/smoke.toml";
    sb.run(&["config", spec, "--explain", "decode.beam_width"])
        .ok()
        .stdout_has("decode.beam_width = 5  # from built-in default");
    sb.run(&["config", spec, "--explain", "model.dropout"])
        .ok()
        .stdout_has("model.dropout = 0.3  # from experiments/base/homework_cnn.toml");
    sb.run(&["config", spec, "--explain", "train.epochs"])
        .ok()
        .stdout_has("train.epochs = 2  # from experiments/smoke.toml");
    sb.run_env(
        &["config", spec, "--explain", "train.epochs"],
        &[("ORCHESTRATE_TRAIN__EPOCHS", "4")],
    )
    .ok()
    .stdout_has("train.epochs = 4  # from environment variable ORCHESTRATE_TRAIN__EPOCHS");
    sb.run_env(
        &[
            "config",
            spec,
            "--explain",
            "train.epochs",
            "--set",
            "train.epochs=6",
        ],
        &[("ORCHESTRATE_TRAIN__EPOCHS", "4")],
    )
    .ok()
    .stdout_has("train.epochs = 6  # from --set train.epochs=6");
    sb.run(&["config", spec, "--explain", "optimizer.lr"])
        .ok()
        .stdout_has("# varied by grid axis `optimizer.lr`: [0.001, 0.003]");
    sb.run(&["config", spec, "--explain", "train.epoch"])
        .expect_code(2)
        .stderr_has("did you mean `train.epochs`?");
}

#[test]
fn inspect_counts_the_homework_cnn_by_hand() {
    let sb = Sandbox::new();
    let out = sb.run(&["inspect", "experiments/q2_grid.toml"]);
    out.ok();
    insta::assert_snapshot!("inspect_q2_grid", out.stdout);
    let total = out.stdout.lines().find(|l| l.starts_with("total")).unwrap();
    assert!(total.ends_with("420906"), "{total}");
}

#[test]
fn inspect_shows_each_distinct_model_of_the_grid() {
    let sb = Sandbox::new();
    let out = sb.run(&["inspect", "experiments/q3_attention.toml"]);
    out.ok();
    insta::assert_snapshot!("inspect_q3_attention", out.stdout);
    assert_eq!(out.stdout.matches("model: seq2seq").count(), 2);
}

#[test]
fn inspect_reads_vocabularies_from_the_training_file() {
    let sb = Sandbox::new();
    // English <tab> Spanish; source column 1 (Spanish), target column 0 (English).
    sb.write(
        "data/spa-eng/train-eng-spa.txt",
        "Go.\tVe.\nHi.\tHola.\nThis line is far too long to keep\tx\n",
    );
    let out = sb.run(&["inspect", "experiments/q3_attention.toml"]);
    out.ok();
    // Spanish chars {V,e,.,H,o,l,a} = 7 and English {G,o,.,H,i} = 5, plus 4 specials each.
    out.stdout_has(
        "vocabularies 11 source and 9 target tokens (counted in data/spa-eng/train-eng-spa.txt",
    );
    out.stdout_has("embedding 11x128");
}

#[test]
fn bad_specs_exit_3_name_the_file_and_write_nothing() {
    let sb = Sandbox::new();
    let mut fixtures: Vec<String> = std::fs::read_dir(sb.path().join("specs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "cycle_b.toml")
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 25);
    for f in &fixtures {
        let spec = format!("specs/{f}");
        for cmd in ["plan", "inspect"] {
            sb.run(&[cmd, &spec]).expect_code(3).stderr_has(f.as_str());
        }
    }
    assert!(
        !sb.path().join("runs").exists(),
        "a bad spec writes nothing under runs/"
    );
}

#[test]
fn bad_values_from_the_environment_and_flags_name_their_source() {
    let sb = Sandbox::new();
    sb.run_env(
        &["plan", "experiments/smoke.toml"],
        &[("ORCHESTRATE_OPTIMIZER__KIND", "rmsprop")],
    )
    .expect_code(3)
    .stderr_has("environment variable ORCHESTRATE_OPTIMIZER__KIND: `optimizer.kind` = \"rmsprop\"")
    .stderr_has("\"sgd\", \"adam\", \"adamw\"");
    sb.run(&[
        "plan",
        "experiments/smoke.toml",
        "--set",
        "train.batch_size=0",
    ])
    .expect_code(3)
    .stderr_has("--set train.batch_size=0: `train.batch_size` = 0: must be at least 1");
}

#[test]
fn a_best_test_checkpoint_without_the_best_kept_is_a_spec_error() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("experiments/no_best.toml"),
        "extends = \"smoke.toml\"\nname = \"no_best\"\n[train.checkpoint]\nkeep_best = false\n\
         [select]\ntest_checkpoint = \"best\"\n",
    )
    .unwrap();
    sb.run(&["plan", "experiments/no_best.toml"])
        .expect_code(3)
        .stderr_has("experiments/no_best.toml")
        .stderr_has("`select.test_checkpoint` = \"best\"")
        .stderr_has("keep_best");
    // Unset, it follows keep_best: the final weights are tested.
    sb.run(&[
        "plan",
        "experiments/smoke.toml",
        "--set",
        "train.checkpoint.keep_best=false",
    ])
    .expect_code(0);
    assert!(!sb.path().join("runs").exists(), "nothing written");
}

#[test]
fn a_missing_spec_file_is_a_usage_error() {
    let sb = Sandbox::new();
    sb.run(&["plan", "experiments/nope.toml"])
        .expect_code(2)
        .stderr_has("experiments/nope.toml");
    sb.run(&["plan", "experiments/smoke.toml", "--set", "novalue"])
        .expect_code(2)
        .stderr_has("expected KEY=VALUE");
}

#[test]
fn a_schedule_is_part_of_the_config_but_not_of_run_ids() {
    let sb = Sandbox::new();
    let plain = sb.run(&["plan", "experiments/q2_grid.toml", "--json"]);
    plain.ok();
    let sets = [
        "--set",
        "schedule.kind=\"successive_halving\"",
        "--set",
        "schedule.min_epochs=1",
    ];
    let mut args = vec!["plan", "experiments/q2_grid.toml", "--json"];
    args.extend(sets);
    let scheduled = sb.run(&args);
    scheduled.ok();
    let ids = |text: &str| -> Vec<String> {
        let plan: serde_json::Value = serde_json::from_str(text).unwrap();
        plan["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!ids(&plain.stdout).is_empty(), "{}", plain.stdout);
    assert_eq!(ids(&plain.stdout), ids(&scheduled.stdout));

    let mut args = vec!["config", "experiments/q2_grid.toml"];
    args.extend(sets);
    let out = sb.run(&args);
    out.ok();
    let v: toml::Table = out.stdout.parse().unwrap();
    assert_eq!(v["schedule"]["kind"].as_str(), Some("successive_halving"));
    assert_eq!(v["schedule"]["reduction_factor"].as_integer(), Some(3));
    // Without a schedule the resolved config has no such section: configs stay as they were.
    let none = sb.run(&["config", "experiments/q2_grid.toml"]);
    none.ok();
    assert!(!none.stdout.contains("[schedule]"), "{}", none.stdout);

    // With --detach nobody would decide the rungs: any schedule is refused rather than left
    // waiting at its first rung.
    for kind in ["successive_halving", "asha", "median"] {
        let set = format!("schedule.kind=\"{kind}\"");
        sb.run(&[
            "run",
            "experiments/q2_grid.toml",
            "--backend",
            "slurm",
            "--detach",
            "--set",
            &set,
        ])
        .expect_code(3)
        .stderr_has(&format!("`schedule.kind` = \"{kind}\""))
        .stderr_has("drop --detach");
    }
    assert!(!sb.path().join("runs").exists(), "nothing written");
}

#[test]
fn plan_shows_the_schedule_and_the_epochs_it_saves() {
    let sb = Sandbox::new();
    let sets = [
        "--set",
        "schedule.kind=\"successive_halving\"",
        "--set",
        "train.epochs=9",
    ];
    let mut args = vec!["plan", "experiments/q2_optimizers.toml"];
    args.extend(sets);
    let out = sb.run(&args);
    out.ok();
    let schedule = &out.stdout[out.stdout.find("schedule:").unwrap()..];
    insta::assert_snapshot!("plan_schedule_halving", schedule);
    args.push("--json");
    let json = sb.run(&args);
    json.ok();
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let s = &plan["schedule"];
    assert_eq!(s["kind"], "successive_halving");
    // Nine trainings, eta 3: 9 -> 3 at epoch 1, 3 -> 1 at epoch 3, one trains all 9.
    assert_eq!(s["rungs"][0]["enter"], 9);
    assert_eq!(s["rungs"][0]["keep"], 3);
    assert_eq!(s["rungs"][1]["epoch"], 3);
    assert_eq!(s["rungs"][1]["keep"], 1);
    assert_eq!(s["most_epochs"], 6 + 2 * 3 + 9);
    assert_eq!(s["full_epochs"], 81);
    // Greedy and beam decoding of one trained model are one training to the schedule.
    let q3 = sb.run(&[
        "plan",
        "experiments/q3_attention.toml",
        "--json",
        "--set",
        "schedule.kind=\"median\"",
    ]);
    q3.ok();
    let q3: serde_json::Value = serde_json::from_str(&q3.stdout).unwrap();
    assert_eq!(q3["runs"].as_array().unwrap().len(), 4);
    assert_eq!(q3["schedule"]["trainings"], 2);
    assert_eq!(q3["schedule"]["rungs"].as_array().unwrap().len(), 0);
    // ASHA's early promotions can exceed halving's counts: `plan` does not call them a bound.
    let asha = sb.run(&[
        "plan",
        "experiments/q2_optimizers.toml",
        "--set",
        "schedule.kind=\"asha\"",
        "--set",
        "train.epochs=9",
    ]);
    asha.ok()
        .stdout_has("21 of the full grid's 81 (26%) if asha keeps what synchronous halving keeps")
        .stdout_has("early promotions may train more");
    assert!(!asha.stdout.contains("at most"), "{}", asha.stdout);
    // No schedule, no schedule lines.
    let plain = sb.run(&["plan", "experiments/q2_optimizers.toml"]);
    plain.ok();
    assert!(!plain.stdout.contains("schedule:"));
    // Replicates: 4 configurations of 2 replicates (8 trainings). Halving keeps ceil(4 / 3)
    // = 2 configurations, 4 runs, where 8 single runs would keep 3.
    let mut args = vec!["plan", "experiments/q2_quick.toml", "--json"];
    args.extend(sets);
    args.extend([
        "--set",
        "repeats=2",
        "--set",
        "grid.\"optimizer.lr\"=[0.0001, 0.001, 0.01, 0.1]",
    ]);
    let rep = sb.run(&args);
    rep.ok();
    let rep: serde_json::Value = serde_json::from_str(&rep.stdout).unwrap();
    let s = &rep["schedule"];
    assert_eq!(
        (s["trainings"].as_u64(), s["replicates"].as_u64()),
        (Some(8), Some(2)),
        "{s}"
    );
    let rungs: Vec<(u64, u64)> = s["rungs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["enter"].as_u64().unwrap(), r["keep"].as_u64().unwrap()))
        .collect();
    assert_eq!(rungs, [(8, 4), (4, 2)], "{s}");
    args.retain(|a| *a != "--json");
    sb.run(&args)
        .ok()
        .stdout_has("over 8 trainings (4 configurations of 2 replicates, ranked by their mean");
}
