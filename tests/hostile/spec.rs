//! The spec loader and the grid against files that never end, files that are not files,
//! grids too large to hold, and overrides whose errors must name the flag or variable.

use crate::util::{Output, Sandbox};

/// Runs `orchestrate ARGS` in the sandbox under a memory and time limit: before the fixes a
/// read of `/dev/zero` grew without bound, a FIFO blocked forever and a huge grid aborted on
/// an allocation, and a failing test must not take the machine down with it.
fn run_limited(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["60", "sh", "-c", "ulimit -v 4000000; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_orchestrate"))
        .args(args)
        .current_dir(sb.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("ORCHESTRATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let shown = format!("orchestrate {} (at most 4 GB, 60 s)", args.join(" "));
    Output::from_process(shown, sb.path(), out)
}

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// The first line of stderr, which is what a user reads.
fn first_error_line(out: &Output) -> &str {
    out.stderr.lines().next().unwrap_or("")
}

#[test]
fn extends_dev_zero_is_refused_without_reading_it() {
    let sb = Sandbox::new();
    sb.write("zero.toml", "extends = \"/dev/zero\"\n");
    let out = run_limited(&sb, &["plan", "zero.toml"], &[]);
    out.expect_code(3)
        .stderr_has("zero.toml: cannot read `extends` file /dev/zero")
        .stderr_has("character device, not a regular file");
}

#[test]
fn a_fifo_as_spec_or_extends_file_is_refused_not_waited_on() {
    let sb = Sandbox::new();
    mkfifo(&sb.path().join("pipe.toml"));
    run_limited(&sb, &["plan", "pipe.toml"], &[])
        .expect_code(2)
        .stderr_has(
            "cannot read spec file pipe.toml: it is a named pipe (FIFO), not a regular file",
        );
    sb.write("child.toml", "extends = \"pipe.toml\"\n");
    run_limited(&sb, &["plan", "child.toml"], &[])
        .expect_code(3)
        .stderr_has("child.toml: cannot read `extends` file pipe.toml: it is a named pipe (FIFO)");
}

#[test]
fn a_directory_as_extends_file_is_named_as_such() {
    let sb = Sandbox::new();
    sb.write("child.toml", "extends = \"experiments\"\n");
    run_limited(&sb, &["plan", "child.toml"], &[])
        .expect_code(3)
        .stderr_has(
            "cannot read `extends` file experiments: it is a directory, not a regular file",
        );
}

#[test]
fn a_spec_over_one_mebibyte_is_refused_and_one_under_is_read() {
    let sb = Sandbox::new();
    // Valid TOML either way: only its size is wrong.
    let comment = format!("# {}\n", "x".repeat(1022));
    let body = "name = \"sized\"\n";
    sb.write("big.toml", &format!("{}{body}", comment.repeat(1025)));
    run_limited(&sb, &["plan", "big.toml"], &[])
        .expect_code(2)
        .stderr_has(
            "cannot read spec file big.toml: it is larger than 1 MiB, the limit for a spec file",
        );
    sb.write("base.toml", &format!("{}{body}", comment.repeat(1025)));
    sb.write("child.toml", "extends = \"base.toml\"\n");
    run_limited(&sb, &["plan", "child.toml"], &[])
        .expect_code(3)
        .stderr_has("child.toml: cannot read `extends` file base.toml: it is larger than 1 MiB");
    sb.write("fits.toml", &format!("{}{body}", comment.repeat(1000)));
    run_limited(&sb, &["plan", "fits.toml"], &[]).ok();
}

/// Seven axes of ten values: 10^7 runs.
fn ten_million_runs() -> Vec<String> {
    [
        "seed",
        "train.epochs",
        "train.batch_size",
        "train.log_every",
        "data.train_limit",
        "data.test_limit",
        "train.threads",
    ]
    .iter()
    .map(|k| format!("--set=grid.\"{k}\"=[1,2,3,4,5,6,7,8,9,10]"))
    .chain(["--set=grid.\"optimizer.lr\"=[0.001]".to_string()])
    .collect()
}

#[test]
fn a_ten_million_run_grid_is_refused_with_its_count_even_when_max_runs_allows_it() {
    let sb = Sandbox::new();
    let sets = ten_million_runs();
    let mut args: Vec<&str> = vec!["plan", "experiments/smoke.toml"];
    args.extend(sets.iter().map(String::as_str));
    args.push("--set=launch.max_runs=100000000");
    let out = run_limited(&sb, &args, &[]);
    out.expect_code(3)
        .stderr_has(
            "the grid expands to 10000000 runs, more than the 100000 runs one experiment may have",
        )
        .stderr_has("launch.max_runs = 100000000");
    // Without raising max_runs, the ordinary limit is what the user hits.
    args.pop();
    run_limited(&sb, &args, &[])
        .expect_code(3)
        .stderr_has("the grid expands to 10000000 runs, more than launch.max_runs = 1000");
}

#[test]
fn a_huge_random_search_is_refused_before_its_samples_are_drawn() {
    let sb = Sandbox::new();
    sb.write(
        "random.toml",
        "[grid.random]\nsamples = 100000000000\n\
         \"optimizer.lr\" = { dist = \"log-uniform\", low = 0.0001, high = 0.1 }\n",
    );
    run_limited(&sb, &["plan", "random.toml"], &[])
        .expect_code(3)
        .stderr_has("the grid expands to 100000000000 runs, more than launch.max_runs = 1000");
    assert!(!sb.path().join("runs").exists());
}

#[test]
fn a_big_grid_within_max_runs_still_plans() {
    let sb = Sandbox::new();
    // 20,000 runs, over the default max_runs and under the ceiling.
    let mut args = vec![
        "plan".to_string(),
        "experiments/smoke.toml".to_string(),
        "--set=launch.max_runs=20000".to_string(),
        format!("--set=grid.seed={:?}", (0..200).collect::<Vec<_>>()),
        format!(
            "--set=grid.\"train.batch_size\"={:?}",
            (1..=100).collect::<Vec<_>>()
        ),
    ];
    args.push("--set=grid.\"optimizer.lr\"=[0.001]".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_limited(&sb, &args, &[]);
    out.ok()
        .stdout_has("smoke: 20000 runs in runs/smoke")
        .stdout_has("\n19999 ");
}

#[test]
fn an_empty_grid_axis_from_set_is_blamed_on_the_flag() {
    let sb = Sandbox::new();
    let out = run_limited(
        &sb,
        &[
            "plan",
            "experiments/smoke.toml",
            "--set",
            "grid.\"optimizer.lr\"=[]",
        ],
        &[],
    );
    out.expect_code(3);
    assert_eq!(
        first_error_line(&out),
        "error: --set grid.\"optimizer.lr\"=[]: `grid.optimizer.lr`: an axis needs at least one value",
        "{}",
        out.stderr
    );
    assert!(!sb.path().join("runs").exists());
}

#[test]
fn grid_errors_from_the_environment_name_the_variable() {
    let sb = Sandbox::new();
    let out = run_limited(
        &sb,
        &["plan", "experiments/smoke.toml"],
        &[("ORCHESTRATE_GRID__MODEL__DROPOUT", "[]")],
    );
    out.expect_code(3);
    assert_eq!(
        first_error_line(&out),
        "error: environment variable ORCHESTRATE_GRID__MODEL__DROPOUT: `grid.model.dropout`: \
         an axis needs at least one value",
        "{}",
        out.stderr
    );
    let out = run_limited(
        &sb,
        &["plan", "experiments/smoke.toml"],
        &[("ORCHESTRATE_GRID__RANDOM__SAMPLES", "3")],
    );
    out.expect_code(3).stderr_has(
        "error: environment variable ORCHESTRATE_GRID__RANDOM__SAMPLES: `grid.random.samples`: \
         is 3 but grid.random has no parameters",
    );
}

#[test]
fn zip_and_variant_errors_from_set_name_the_flag_and_file_errors_the_file() {
    let sb = Sandbox::new();
    let zip = "grid.zip=[{\"optimizer.lr\"=[0.1],\"train.epochs\"=[1,2]}]";
    run_limited(&sb, &["plan", "experiments/smoke.toml", "--set", zip], &[])
        .expect_code(3)
        .stderr_has(&format!(
            "error: --set {zip}: `grid.zip.0`: axes of a zip group"
        ));
    let variant = "grid.variant=[{\"train.batch_size\"=0}]";
    run_limited(
        &sb,
        &["plan", "experiments/smoke.toml", "--set", variant],
        &[],
    )
    .expect_code(3)
    .stderr_has(&format!("error: --set {variant}: `grid.train.batch_size`"));
    // The shipped axis is still the file's.
    run_limited(
        &sb,
        &[
            "plan",
            "experiments/smoke.toml",
            "--set",
            "optimizer.kind=\"sgd\"",
        ],
        &[],
    )
    .ok();
    sb.write(
        "bad_axis.toml",
        "extends = \"experiments/smoke.toml\"\n[grid]\n\"optimizer.lr\" = [0.0]\n",
    );
    run_limited(&sb, &["plan", "bad_axis.toml"], &[])
        .expect_code(3)
        .stderr_has("error: bad_axis.toml: `grid.optimizer.lr`");
}

#[test]
fn a_bad_run_from_a_set_axis_names_the_flag() {
    let sb = Sandbox::new();
    // step_size = 0 is only wrong in the runs whose variant turns the step schedule on.
    let axis = "grid.\"optimizer.step_size\"=[0,1]";
    let out = run_limited(
        &sb,
        &[
            "plan",
            "experiments/smoke.toml",
            "--set",
            axis,
            "--set",
            "grid.variant=[{\"optimizer.schedule\"=\"step\"}]",
        ],
        &[],
    );
    out.expect_code(3);
    assert_eq!(
        first_error_line(&out),
        format!(
            "error: --set {axis}: run 0 (optimizer.lr = 0.001, optimizer.schedule = \"step\", \
             optimizer.step_size = 0): `optimizer.step_size` = 0: must be at least 1"
        ),
        "{}",
        out.stderr
    );
}
