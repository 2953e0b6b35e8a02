// TEMP: replaced at merge (the spec engineer's `spec::load` / `spec::SpecArgs`).
//! Minimal stand-in for spec loading: one TOML file, `--set key=value`, grid axes.

use std::path::{Path, PathBuf};

use super::Spec;

/// Positional spec FILE plus repeated `--set key=value`.
#[derive(Debug, Clone, clap::Args)]
pub struct SpecArgs {
    /// The experiment spec (TOML).
    pub file: PathBuf,
    /// Override a key: `--set optimizer.lr=0.01`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    pub path: PathBuf,
    pub message: String,
}

/// Loads a spec file with `--set` overrides.
pub fn load(path: &Path, sets: &[String]) -> Result<Spec, SpecError> {
    let err = |message: String| SpecError {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| err(format!("--set {s}: expected KEY=VALUE")))?;
        let value = toml::from_str::<toml::Table>(&format!("x = {v}"))
            .ok()
            .and_then(|mut t| t.remove("x"))
            .unwrap_or_else(|| toml::Value::String(v.into()));
        set_dotted(&mut table, k, value);
    }
    if let Some(toml::Value::Table(grid)) = table.get_mut("grid") {
        let mut axes = toml::Table::new();
        for key in grid.keys().cloned().collect::<Vec<_>>() {
            if !matches!(key.as_str(), "zip" | "variant" | "random" | "axes") {
                axes.insert(
                    key.clone(),
                    grid.remove(&key).unwrap_or(toml::Value::Boolean(false)),
                );
            }
        }
        grid.insert("axes".into(), toml::Value::Table(axes));
    }
    let mut spec: Spec = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| err(e.to_string()))?;
    if spec.name.is_empty() {
        spec.name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    Ok(spec)
}

/// Sets `a.b.c = value` in a TOML table, creating tables on the way.
pub fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut t = table;
    for p in parts {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let Some(next) = entry.as_table_mut() else {
            return;
        };
        t = next;
    }
    t.insert(last.to_string(), value);
}
