//! A spec loaded and expanded in one step, a bad grid entry reported against the spec layer
//! that set it. It lives here, not in `spec`, because expanding is the grid's job and `spec`
//! is the lower layer: it must not know about runs.

use std::path::Path;

use super::identity::DataFingerprint;
use super::{GridError, RunPlan, expand_with};
use crate::spec::error::escape_controls;
use crate::spec::{DataSpec, Resolved, Spec, SpecError, resolve};

/// Why a spec could not be turned into runs.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The spec could not be loaded or is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The grid does not expand to valid runs; `origin` is the layer that set the grid entry
    /// at fault (the spec file when no single entry is).
    #[error("{}: {}", escape_controls(origin), escape_controls(&source.to_string()))]
    Grid {
        origin: String,
        #[source]
        source: Box<GridError>,
    },
}

impl LoadError {
    /// Whether the user named a spec file that cannot be read (a usage error, not a bad spec).
    pub fn is_unreadable_input(&self) -> bool {
        matches!(self, LoadError::Spec(e) if e.is_unreadable_input())
    }
}

/// Expands the grid of a resolved spec into runs; a bad grid entry is reported against the
/// layer that set it (a file, an environment variable, a `--set` flag).
pub fn expand_resolved(resolved: &Resolved) -> Result<Vec<RunPlan>, LoadError> {
    expand_resolved_with(resolved, &mut |_| DataFingerprint::Unread)
}

/// [`expand_resolved`] with each run's data fingerprint given by `data`.
pub fn expand_resolved_with(
    resolved: &Resolved,
    data: &mut dyn FnMut(&DataSpec) -> DataFingerprint,
) -> Result<Vec<RunPlan>, LoadError> {
    expand_with(&resolved.spec, data).map_err(|source| LoadError::Grid {
        origin: match &source {
            GridError::Entry { at, .. } => resolved.grid_entry_origin(at),
            GridError::Run { key, .. } if !key.is_empty() => Some(resolved.run_origin(key)),
            _ => None,
        }
        .unwrap_or_else(|| resolved.file.display().to_string()),
        source: Box::new(source),
    })
}

/// Loads a spec (environment overrides included) and expands its grid without reading data
/// (provisional ids, see [`DataFingerprint::Unread`]).
pub fn load_runs(path: &Path, sets: &[String]) -> Result<(Spec, Vec<RunPlan>), LoadError> {
    load_runs_with(path, sets, &mut |_| DataFingerprint::Unread)
}

/// Loads a spec and expands its grid, each run's data fingerprint given by `data`.
pub fn load_runs_with(
    path: &Path,
    sets: &[String],
    data: &mut dyn FnMut(&DataSpec) -> DataFingerprint,
) -> Result<(Spec, Vec<RunPlan>), LoadError> {
    let resolved = resolve(path, sets, std::env::vars())?;
    let runs = expand_resolved_with(&resolved, data)?;
    Ok((resolved.spec, runs))
}
