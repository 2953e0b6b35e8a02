//! The experiment lock `runs/<experiment>/.lock` against a stale-lock takeover race and a
//! symbolic link planted at its path.

use std::path::Path;
use std::sync::{Arc, Barrier};

use orchestrate::store::ExperimentLock;
use orchestrate::store::lock::{LockInfo, hostname};

use crate::util::Sandbox;

/// A lock left by a process that has exited and been reaped: its pid is dead.
fn write_stale(dir: &Path) {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = LockInfo {
        pid: dead,
        host: hostname(),
        started: 1,
    };
    std::fs::write(dir.join(".lock"), serde_json::to_string(&stale).unwrap()).unwrap();
}

/// Two takers released at once on the same stale lock, many times over: exactly one gets
/// it, the other is told who holds it. Before the takeover re-read the holder under a
/// directory lock, the loser got "`.lock`: No such file or directory" or removed the
/// winner's fresh lock and ran beside it.
#[test]
fn two_orchestrators_racing_for_a_stale_lock_get_one_winner_and_one_clear_refusal() {
    for round in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        write_stale(dir.path());
        let start = Arc::new(Barrier::new(2));
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let (dir, start) = (dir.path().to_path_buf(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    ExperimentLock::acquire(&dir).map_err(|e| e.to_string())
                })
            })
            .collect();
        let results: Vec<_> = takers.into_iter().map(|t| t.join().unwrap()).collect();
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(e) = r {
                // Both takers are this process, so the winner's pid is ours.
                let holder = format!(
                    "is locked by another orchestrator (pid {}",
                    std::process::id()
                );
                assert!(e.contains(&holder), "round {round}: {e}");
            }
        }
    }
}

#[test]
fn a_dangling_lock_symlink_is_refused_and_not_blamed_on_this_orchestrator() {
    let sb = Sandbox::with_data();
    let exp = sb.path().join("runs/smoke");
    std::fs::create_dir_all(&exp).unwrap();
    std::os::unix::fs::symlink("/nonexistent/elsewhere", exp.join(".lock")).unwrap();
    let out = sb.run(&["run", "experiments/smoke.toml"]);
    out.expect_code(5)
        .stderr_has("runs/smoke/.lock: is a symbolic link to /nonexistent/elsewhere")
        .stderr_has("remove it");
    assert!(
        !out.stderr.contains("locked by another orchestrator"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_dir(&exp).unwrap().count(),
        1,
        "nothing but the link"
    );
}

#[test]
fn a_lock_symlink_to_a_file_is_refused_and_the_file_left_alone() {
    let sb = Sandbox::with_data();
    let exp = sb.path().join("runs/smoke");
    std::fs::create_dir_all(&exp).unwrap();
    sb.write("victim.txt", "precious\n");
    std::os::unix::fs::symlink(sb.path().join("victim.txt"), exp.join(".lock")).unwrap();
    sb.run(&["run", "experiments/smoke.toml"])
        .expect_code(5)
        .stderr_has(".lock: is a symbolic link to");
    assert_eq!(
        std::fs::read_to_string(sb.path().join("victim.txt")).unwrap(),
        "precious\n"
    );
}
