//! The README's walls between modules, checked on the source text: a cycle between two
//! modules compiles fine in Rust, so only a test notices one coming back.

use std::path::Path;

/// Files under `src/` (a directory or one file) whose text mentions `needle`.
fn files_naming(under: &str, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(under),
    ];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|x| x == "rs")
            && std::fs::read_to_string(&p).unwrap().contains(needle)
        {
            hits.push(p.display().to_string());
        }
    }
    hits
}

/// `spec` is the lower layer: the grid expands a spec, a spec knows nothing of runs.
#[test]
fn spec_does_not_use_the_grid() {
    assert_eq!(files_naming("spec", "crate::grid"), Vec::<String>::new());
}

/// The CLI's error maps library errors to exit codes; a library module that used it would
/// depend on every other module through it.
#[test]
fn library_modules_do_not_use_the_cli_error() {
    for module in [
        "spec",
        "grid",
        "summary",
        "inspect.rs",
        "data",
        "models",
        "store",
    ] {
        for needle in ["crate::error", "crate::Error"] {
            assert_eq!(
                files_naming(module, needle),
                Vec::<String>::new(),
                "{needle}"
            );
        }
    }
}
