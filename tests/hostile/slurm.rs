//! The Slurm batch script under hostile values (issue 15, item 1): every `launch.slurm` value
//! outside what sbatch accepts is refused with the key named (exit 3, no `runs/`), and every
//! path the script names (`--runs-dir`, the working directory, the executable) stays one
//! token for bash and for sbatch's `#SBATCH` parser, or is refused (exit 2) when no script
//! line can hold it. A script that is written is checked as a user would: `bash -n`, then run
//! with `env -i bash`, where it must stop at the array-task check and create nothing.

use std::process::Command;

use crate::util::Sandbox;

/// Payloads that would run `touch CANARY` (or break a line) if they reached bash or sbatch
/// unquoted, written as TOML basic-string contents.
const PAYLOADS: &[&str] = &[
    r"8G\ntouch CANARY",
    r"$(touch CANARY)",
    r"`touch CANARY`",
    r"8G; touch CANARY",
    r#"8G' \"touch CANARY"#,
    r"8G\rtouch CANARY",
    r"8G\u0000touch CANARY",
    r"8G # touch CANARY",
];

/// `plan --backend slurm` with `sets`; asserts exit 3 naming `key`, and nothing written.
fn refused(sets: &[String], key: &str) {
    let sb = Sandbox::with_data();
    for cmd in ["plan", "run"] {
        let mut args = vec![cmd, "experiments/smoke.toml", "--backend", "slurm"];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = sb.run(&args);
        out.expect_code(3).stderr_has(&format!("`{key}` = "));
        assert_eq!(
            out.stderr.trim_end().lines().count(),
            1,
            "one line per problem: {}",
            out.stderr
        );
        assert!(!out.stdout.contains("#SBATCH"), "no script printed");
        assert!(!sb.path().join("runs").exists(), "{cmd} wrote runs/");
        assert!(!sb.path().join("CANARY").exists());
    }
}

#[test]
fn hostile_memory_time_gres_and_partition_are_refused_with_the_key_named() {
    for key in ["mem", "time", "gres", "partition"] {
        for p in PAYLOADS {
            refused(
                &[format!("launch.slurm.{key}=\"{p}\"")],
                &format!("launch.slurm.{key}"),
            );
        }
    }
}

#[test]
fn the_issue_reproduction_no_longer_prints_a_touch_line() {
    let sb = Sandbox::with_data();
    let out = sb.run(&[
        "plan",
        "experiments/smoke.toml",
        "--backend",
        "slurm",
        "--set",
        r#"launch.slurm.mem="8G\ntouch /tmp/canary""#,
    ]);
    out.expect_code(3)
        .stderr_has(r#"`launch.slurm.mem` = "8G\ntouch /tmp/canary""#)
        .stderr_has("K, M, G or T");
    assert!(!out.stdout.contains("touch"));
}

#[test]
fn a_newline_in_time_adds_no_sbatch_line() {
    refused(
        &[r#"launch.slurm.time="01:00:00\n#SBATCH --wrap=touch CANARY""#.to_string()],
        "launch.slurm.time",
    );
}

#[test]
fn hostile_extra_args_are_refused_with_the_element_named() {
    for bad in [
        r"--qos=normal\ntouch CANARY",
        r"--qos=normal\u0000",
        r"$(touch CANARY)",
        r"`touch CANARY`",
        r"; touch CANARY",
        "evil.sh",
        "-Adl",
        "--wrap=touch CANARY",
        "--wr=touch CANARY",
        "--output=/tmp/elsewhere",
    ] {
        refused(
            &[format!(
                r#"launch.slurm.extra_args=["--account=dl", "{bad}"]"#
            )],
            "launch.slurm.extra_args.1",
        );
    }
}

#[test]
fn values_from_the_spec_file_and_the_environment_are_refused_naming_their_source() {
    let sb = Sandbox::with_data();
    sb.write(
        "hostile.toml",
        "extends = \"experiments/smoke.toml\"\n\n[launch.slurm]\ngres = \"gpu:1\\u0000touch CANARY\"\n",
    );
    let out = sb.run(&["plan", "hostile.toml", "--backend", "slurm"]);
    out.expect_code(3)
        .stderr_has("hostile.toml")
        .stderr_has(r#"`launch.slurm.gres` = "gpu:1\0touch CANARY""#);

    let out = sb.run_env(
        &["run", "experiments/smoke.toml", "--backend", "slurm"],
        &[(
            "ORCHESTRATE_LAUNCH__SLURM__PARTITION",
            "debug\ntouch CANARY",
        )],
    );
    out.expect_code(3)
        .stderr_has("ORCHESTRATE_LAUNCH__SLURM__PARTITION")
        .stderr_has(r#"`launch.slurm.partition` = "debug\ntouch CANARY""#);
    assert!(!sb.path().join("runs").exists());
}

#[test]
fn values_sbatch_documents_are_accepted() {
    let sb = Sandbox::with_data();
    let out = sb.run(&[
        "plan",
        "experiments/smoke.toml",
        "--backend",
        "slurm",
        "--json",
        "--set",
        "launch.slurm.mem=\"16GB\"",
        "--set",
        "launch.slurm.time=\"1-12:30\"",
        "--set",
        "launch.slurm.gres=\"gpu:a100:2,mps:50\"",
        "--set",
        "launch.slurm.partition=\"gpu,long\"",
        "--set",
        r#"launch.slurm.extra_args=["--account=dl-course", "--exclusive"]"#,
    ]);
    out.ok();
    let script = script_of(&out.stdout);
    for line in [
        "#SBATCH --mem=16GB",
        "#SBATCH --time=1-12:30",
        "#SBATCH --gres=gpu:a100:2,mps:50",
        "#SBATCH --partition=gpu,long",
    ] {
        assert!(script.lines().any(|l| l == line), "{line} in\n{script}");
    }
}

/// The batch script of `plan --json` output.
fn script_of(stdout: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(stdout).expect("plan --json prints JSON");
    v["slurm"]["script"]
        .as_str()
        .expect("plan --json has slurm.script")
        .to_string()
}

/// Checks a written script as a user would: one `#SBATCH` line per option (`options`),
/// `bash -n` accepts it, and `env -i bash` stops at the task check without creating a file.
fn harmless(script: &str, options: usize) {
    let sbatch: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("#SBATCH"))
        .collect();
    assert_eq!(sbatch.len(), options, "#SBATCH lines:\n{script}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("submit.sh");
    std::fs::write(&file, script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}\n{script}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let run = Command::new("env")
        .args(["-i", "bash"])
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "the script ran past the task check");
    assert!(
        stderr.contains("SLURM_ARRAY_TASK_ID: not started as a Slurm array task"),
        "{stderr}"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, vec![std::ffi::OsString::from("submit.sh")]);
}

#[test]
fn an_extra_argument_with_shell_syntax_in_its_value_stays_one_quoted_word() {
    let sb = Sandbox::with_data();
    let out = sb.run(&[
        "plan",
        "experiments/smoke.toml",
        "--backend",
        "slurm",
        "--json",
        "--set",
        r#"launch.slurm.extra_args=["--comment=$(touch CANARY); `touch CANARY` 'x' \"y\""]"#,
    ]);
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let command = v["slurm"]["command"].as_str().unwrap();
    assert!(
        command.starts_with(
            r#"sbatch --parsable '--comment=$(touch CANARY); `touch CANARY` '\''x'\'' "y"' "#
        ),
        "{command}"
    );
    let script = script_of(&out.stdout);
    assert!(
        script.contains(
            "# Submitted with extra sbatch arguments: \
             '--comment=$(touch CANARY); `touch CANARY` '\\''x'\\'' \"y\"'\n"
        ),
        "{script}"
    );
    harmless(&script, 6);
    assert!(!sb.path().join("CANARY").exists());
}

/// Directory names with everything bash or sbatch would read as syntax.
const HOSTILE_DIRS: &[&str] = &[
    "r $(touch CANARY)",
    "r`touch CANARY`",
    "r;touch CANARY",
    "r'\"q",
    "r#x",
    "r%x%%",
    "r\\b",
];

#[test]
fn a_hostile_runs_dir_stays_one_token() {
    for dir in HOSTILE_DIRS {
        let sb = Sandbox::with_data();
        let out = sb.run(&[
            "plan",
            "experiments/smoke.toml",
            "--backend",
            "slurm",
            "--json",
            "--runs-dir",
            dir,
        ]);
        if dir.contains('\\') {
            // A backslash anywhere in --output switches Slurm's %A/%a patterns off.
            out.expect_code(2)
                .stderr_has("--runs-dir")
                .stderr_has("backslash");
            continue;
        }
        out.ok();
        let script = script_of(&out.stdout);
        harmless(&script, 6);
        let abs = sb.path().join(dir).join("smoke/.slurm");
        let quoted = abs
            .to_str()
            .unwrap()
            .replace('%', "%%")
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\'', "\\'")
            .replace('#', "\\#");
        // Words of letters, digits and -_./=:,%@+ need no quotes, for bash or for sbatch.
        let plain = abs
            .to_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,%@+".contains(c));
        let output = if plain {
            format!("#SBATCH --output={quoted}/%A_%a.out")
        } else {
            format!("#SBATCH --output=\"{quoted}/%A_%a.out\"")
        };
        assert!(
            script.lines().any(|l| l == output),
            "expected {output} in\n{script}"
        );
        assert!(
            plain || script.lines().any(|l| l.starts_with("run_list='")),
            "run_list is single-quoted:\n{script}"
        );
        assert!(!sb.path().join("CANARY").exists());
    }
}

#[test]
fn a_runs_dir_with_a_newline_is_a_usage_error_before_anything_is_written() {
    for dir in ["r\ntouch CANARY", "r\rx", "r\tx"] {
        let sb = Sandbox::with_data();
        for cmd in ["plan", "run"] {
            let out = sb.run(&[
                cmd,
                "experiments/smoke.toml",
                "--backend",
                "slurm",
                "--runs-dir",
                dir,
            ]);
            out.expect_code(2)
                .stderr_has("--runs-dir")
                .stderr_has("control character");
            assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);
            let entries: Vec<_> = std::fs::read_dir(sb.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(
                entries
                    .iter()
                    .all(|e| e == "experiments" || e == "specs" || e == "data"),
                "{cmd} wrote {entries:?}"
            );
        }
    }
}

#[test]
fn a_hostile_working_directory_stays_one_token() {
    let sb = Sandbox::with_data();
    let name = "w $(touch CANARY);'\"#%x";
    let cwd = sb.path().join(name);
    std::fs::create_dir(&cwd).unwrap();
    let out = sb.run_in(
        &cwd,
        &[
            "plan",
            "../experiments/smoke.toml",
            "--backend",
            "slurm",
            "--json",
        ],
    );
    out.expect_code(0);
    let script = script_of(&out.stdout);
    harmless(&script, 6);
    let chdir = format!(
        "#SBATCH --chdir=\"{}/w $(touch CANARY);\\'\\\"\\#%x\"",
        sb.path().display()
    );
    assert!(script.lines().any(|l| l == chdir), "{chdir} in\n{script}");
    assert!(!cwd.join("CANARY").exists());

    let bad = sb.path().join("w\nx");
    std::fs::create_dir(&bad).unwrap();
    // Data paths are relative to the working directory; the run must get past its data check.
    std::os::unix::fs::symlink(sb.path().join("data"), bad.join("data")).unwrap();
    let out = sb.run_in(
        &bad,
        &["run", "../experiments/smoke.toml", "--backend", "slurm"],
    );
    out.expect_code(2);
    assert!(out.stderr.contains("working directory"), "{}", out.stderr);
    assert!(!bad.join("runs").exists());
}

#[test]
fn a_hostile_executable_path_stays_one_word() {
    let sb = Sandbox::with_data();
    let bin = sb.path().join("bin $(touch CANARY) `x`;'q'");
    std::fs::create_dir(&bin).unwrap();
    let exe = bin.join("orchestrate");
    // A hard link keeps its own path in /proc/self/exe; fall back to a copy across devices.
    if std::fs::hard_link(env!("CARGO_BIN_EXE_orchestrate"), &exe).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_orchestrate"), &exe).unwrap();
    }
    let out = Command::new(&exe)
        .args([
            "plan",
            "experiments/smoke.toml",
            "--backend",
            "slurm",
            "--json",
        ])
        .current_dir(sb.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = script_of(&String::from_utf8_lossy(&out.stdout));
    harmless(&script, 6);
    let word = format!("'{}' worker", exe.to_str().unwrap().replace('\'', r"'\''"));
    assert!(script.contains(&word), "{word} in\n{script}");
    assert!(!sb.path().join("CANARY").exists());
}

#[test]
fn a_forged_job_id_in_job_json_never_reaches_squeue() {
    let sb = Sandbox::with_data();
    let bin = sb.path().join("fake-slurm");
    std::fs::create_dir(&bin).unwrap();
    for tool in ["squeue", "sacct", "scontrol", "scancel", "sbatch", "sinfo"] {
        let p = bin.join(tool);
        std::fs::write(
            &p,
            "#!/bin/sh\nprintf '%s\\n' \"$@\" >> \"$(dirname \"$0\")/args\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    sb.write(
        "runs/smoke/.slurm/job.json",
        r#"{"jobs":[{"job_id":"--user=ana","submitted_at":1,"script":"/x/submit-1.sh",
            "run_list":"/x/submit-1.runs",
            "tasks":[{"task":0,"run_id":"06d9f0b94511","run_dir":"/x/06d9f0b94511"}]}]}"#,
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = sb.run_env(&["status", "smoke"], &[("PATH", &path)]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    out.stderr_has("job.json")
        .stderr_has(r#"job id "--user=ana" is not a Slurm job id"#);
    assert!(
        !bin.join("args").exists(),
        "a Slurm tool was called with: {}",
        std::fs::read_to_string(bin.join("args")).unwrap_or_default()
    );
}
