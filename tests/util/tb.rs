//! TensorBoard's own reader (`tools/tb_check.py`) run on a log directory.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `tools/tb_check.py` on `logdir` and returns its JSON, or `None` when TensorBoard
/// is missing and the skip variable is set.
pub fn tb_check(logdir: &Path, extra: &[&str]) -> Option<Value> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import tensorboard"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        if std::env::var("ORCHESTRATE_SKIP_TB_CHECK").as_deref() == Ok("1") {
            eprintln!("skipping: tensorboard not importable and ORCHESTRATE_SKIP_TB_CHECK=1");
            return None;
        }
        panic!(
            "`{python} -c \"import tensorboard\"` failed ({probe:?}): these tests read the logs \
             with TensorBoard's own reader. Run `pip install tensorboard` (TensorFlow is not \
             needed), or set ORCHESTRATE_SKIP_TB_CHECK=1 to skip them."
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/tb_check.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script).arg(logdir).args(extra);
    let out = cmd.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "command: {cmd:?}\nstatus: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    Some(serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}")))
}
