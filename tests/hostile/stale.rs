//! Results that cannot go stale: a data file replaced in place gives new runs and marks the
//! old ones stale (never ranked, left on disk), an unchanged file touched or a data directory
//! moved keeps every id, a directory from before data fingerprints is stale, and a plan made
//! without the data says its ids are provisional.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::Sandbox;
use crate::util::runs::run_dirs;

/// Two CNN runs on a private copy of the mini data set in `mydata/` (so a test may change
/// its files).
fn spec(dir: &str) -> String {
    crate::util::mini_cnn_spec(
        "stale",
        200,
        1,
        "",
        "[grid]\n\"optimizer.lr\" = [0.001, 0.003]\n",
    )
    .replace(
        "dir = \"data/fashion-mnist-mini\"",
        &format!("dir = \"{dir}\""),
    )
}

/// A sandbox with the data copied to `mydata/` and the spec written.
fn sandbox() -> Sandbox {
    let sb = Sandbox::with_data();
    let from = sb.path().join("data/fashion-mnist-mini");
    let to = sb.path().join("mydata");
    fs::create_dir(&to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
    sb.write("stale.toml", &spec("mydata"));
    sb
}

fn ids(exp: &Path) -> Vec<String> {
    let mut ids: Vec<String> = run_dirs(exp)
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

fn planned_ids(sb: &Sandbox) -> Vec<(String, String)> {
    let out = sb.run(&["plan", "stale.toml", "--json"]);
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mut ids: Vec<(String, String)> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ids.sort();
    ids
}

fn statuses(dirs: &[PathBuf]) -> Vec<Vec<u8>> {
    dirs.iter()
        .map(|d| fs::read(d.join("status.json")).unwrap())
        .collect()
}

#[test]
fn a_data_file_replaced_in_place_gives_new_runs_and_the_old_ones_go_stale() {
    let sb = sandbox();
    sb.run(&["run", "stale.toml", "--jobs", "2"]).ok();
    let exp = sb.exp_dir("stale");
    let old = ids(&exp);
    assert_eq!(old.len(), 2);
    let old_dirs = run_dirs(&exp);
    let old_summaries: Vec<Vec<u8>> = old_dirs
        .iter()
        .map(|d| fs::read(d.join("summary.json")).unwrap())
        .collect();

    // The same labels, stored uncompressed under the same name (the reader goes by the
    // magic bytes): other bytes, another file (a rename gives it a new inode).
    let labels = sb.path().join("mydata/t10k-labels-idx1-ubyte.gz");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(fs::File::open(&labels).unwrap()),
        &mut plain,
    )
    .unwrap();
    let tmp = sb.path().join("mydata/new-labels");
    fs::write(&tmp, &plain).unwrap();
    fs::rename(&tmp, &labels).unwrap();

    sb.run(&["run", "stale.toml", "--jobs", "2"]).ok();
    let all = ids(&exp);
    assert_eq!(
        all.len(),
        4,
        "two new runs beside the two old ones: {all:?}"
    );
    let new: Vec<&String> = all.iter().filter(|i| !old.contains(i)).collect();
    assert_eq!(new.len(), 2);
    // The new runs have the old ones' names; their TensorBoard logs do not mix with the old
    // logs, which stay where they were: the new ones get their run ID appended.
    let mut logs = tb_names(&exp);
    logs.sort();
    let mut new_logs: Vec<String> = new
        .iter()
        .map(|id| {
            let plan: serde_json::Value =
                serde_json::from_slice(&fs::read(exp.join(id.as_str()).join("plan.json")).unwrap())
                    .unwrap();
            format!("{}-{id}", plan["name"].as_str().unwrap())
        })
        .collect();
    new_logs.sort();
    let mut want: Vec<String> = vec!["lr0.001".into(), "lr0.003".into()];
    want.extend(new_logs.iter().cloned());
    want.sort();
    assert_eq!(logs, want);

    let status = sb.run(&["status", "stale"]);
    status.ok();
    for id in &old {
        let line = status
            .stdout
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("no row for {id}:\n{}", status.stdout));
        assert!(line.contains("stale"), "{line}");
        assert!(line.contains("data changed: test_labels"), "{line}");
    }
    // The count line counts the old runs as stale, not as the done runs their records say.
    status
        .stdout_has("4 run(s): 2 done,")
        .stdout_has(", 2 stale");
    sb.run(&["ls"]).ok().stdout_has("2 done, 2 stale");
    let plan = sb.run(&["plan", "stale.toml"]);
    plan.ok()
        .stdout_has("stale")
        .stdout_has("data changed: test_labels");

    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(exp.join("summary.json")).unwrap()).unwrap();
    let winner = summary["winner"].as_str().unwrap().to_string();
    assert!(new.contains(&&winner), "winner {winner} is not a new run");
    let ranked: Vec<&str> = summary["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        ranked.iter().all(|r| !old.iter().any(|o| o == r)),
        "{ranked:?}"
    );
    // Left on disk untouched: not even their summaries are rewritten.
    for (d, before) in old_dirs.iter().zip(old_summaries) {
        assert_eq!(fs::read(d.join("summary.json")).unwrap(), before);
    }

    // `diff` of the old runs against the new ones says why they differ before any metric.
    for (side, runs) in [("before", old.iter().collect::<Vec<_>>()), ("after", new)] {
        let to = sb.path().join(side).join("stale");
        fs::create_dir_all(&to).unwrap();
        for id in runs {
            copy_dir(&exp.join(id), &to.join(id));
        }
    }
    let out = sb.run(&["diff", "before/stale", "after/stale"]);
    let first_run_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("run "))
        .unwrap_or_else(|| panic!("no run line:\n{}", out.stdout));
    assert!(
        first_run_line.contains("data fingerprint differs: test_labels"),
        "{}",
        out.stdout
    );

    // gc lists the stale runs; --delete asks, and no answer deletes nothing; --yes does.
    let listed = sb.run(&["gc", "stale"]);
    listed.ok().stdout_has("2 stale run(s)");
    for id in &old {
        listed.stdout_has(id);
    }
    sb.run(&["gc", "stale", "--delete"])
        .ok()
        .stdout_has("nothing deleted");
    assert_eq!(ids(&exp).len(), 4);
    sb.run(&["gc", "stale", "--delete", "--yes"])
        .ok()
        .stdout_has("deleted 2 stale run(s)");
    let left = ids(&exp);
    assert!(
        left.iter().all(|i| !old.contains(i)) && left.len() == 2,
        "{left:?}"
    );
    // Each deleted run's TensorBoard log went with it; the current runs' logs stay.
    let mut logs = tb_names(&exp);
    logs.sort();
    assert_eq!(logs, new_logs);
}

/// The directories of the experiment's TensorBoard log tree that hold files.
fn tb_names(exp: &Path) -> Vec<String> {
    let tree = exp.join("tb");
    let Ok(entries) = fs::read_dir(&tree) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| fs::read_dir(p).unwrap().next().is_some())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            copy_dir(&p, &to.join(p.file_name().unwrap()));
        } else {
            fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn a_touched_file_or_a_moved_data_dir_keeps_every_id() {
    let sb = sandbox();
    sb.run(&["run", "stale.toml", "--jobs", "2"]).ok();
    let exp = sb.exp_dir("stale");
    let first = ids(&exp);
    let dirs = run_dirs(&exp);
    let before = statuses(&dirs);

    // A new mtime, the same bytes: re-hashed, same fingerprint, nothing retrained.
    let f = fs::File::options()
        .write(true)
        .open(sb.path().join("mydata/train-images-idx3-ubyte.gz"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    drop(f);
    sb.run(&["run", "stale.toml", "--jobs", "2"]).ok();
    assert_eq!(ids(&exp), first);
    assert_eq!(statuses(&dirs), before, "a finished run was trained again");

    // The data elsewhere, the spec pointing there: the same runs, all done.
    fs::create_dir(sb.path().join("moved")).unwrap();
    fs::rename(sb.path().join("mydata"), sb.path().join("moved/data2")).unwrap();
    sb.write("stale.toml", &spec("moved/data2"));
    let planned = planned_ids(&sb);
    let planned_ids: Vec<&String> = planned.iter().map(|(i, _)| i).collect();
    assert_eq!(planned_ids, first.iter().collect::<Vec<_>>());
    assert!(
        planned.iter().all(|(_, s)| s.starts_with("done")),
        "{planned:?}"
    );
    let status = sb.run(&["status", "stale"]);
    status.ok();
    assert!(!status.stdout.contains("stale "), "{}", status.stdout);
    // And `run` there finds them finished: nothing trained, no other directory.
    sb.run(&["run", "stale.toml", "--jobs", "2"]).ok();
    assert_eq!(ids(&exp), first);
    assert_eq!(statuses(&dirs), before, "a finished run was trained again");
}

#[test]
fn a_directory_from_before_fingerprints_is_stale_and_a_plan_without_data_is_provisional() {
    let sb = sandbox();
    let with_data = planned_ids(&sb);
    // A run directory as an earlier version wrote it: plan.json without data or numerics.
    sb.run(&["run", "stale.toml", "--jobs", "2"]).ok();
    let exp = sb.exp_dir("stale");
    let dir = &run_dirs(&exp)[0];
    let mut plan: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("plan.json")).unwrap()).unwrap();
    let obj = plan.as_object_mut().unwrap();
    assert!(obj.remove("numerics").is_some() && obj.remove("data").is_some());
    fs::write(dir.join("plan.json"), serde_json::to_vec(&plan).unwrap()).unwrap();
    sb.run(&["status", "stale"])
        .ok()
        .stdout_has("stale")
        .stdout_has("written before data fingerprints");

    // Without its data, a plan still lists the runs, under provisional ids, and says so.
    fs::rename(sb.path().join("mydata"), sb.path().join("gone")).unwrap();
    let out = sb.run(&["plan", "stale.toml"]);
    out.ok().stderr_has("run ids are provisional");
    let without = planned_ids(&sb);
    assert_eq!(without.len(), 2);
    assert!(without.iter().all(|w| !with_data.contains(w)));
}
