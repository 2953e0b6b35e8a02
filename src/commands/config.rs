//! `orchestrate config`: the fully resolved spec, or which source set one key.

use super::SpecArgs;
use crate::error::{Error, exit};

/// Arguments of `orchestrate config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Say which source set KEY (default, a file, an environment variable or --set); a
    /// table lists every key under it.
    #[arg(long, value_name = "KEY")]
    pub explain: Option<String>,
}

/// Runs the command; returns the exit code.
pub fn execute(args: &Args) -> Result<i32, Error> {
    let resolved = crate::spec::resolve(&args.spec.file, &args.spec.sets, std::env::vars())?;
    match &args.explain {
        Some(key) => {
            let text = resolved.explain(key).map_err(Error::Usage)?;
            print!("{text}");
        }
        None => {
            let text = toml::to_string_pretty(&resolved.spec)
                .map_err(|e| Error::Usage(format!("cannot print the spec: {e}")))?;
            print!("{text}");
        }
    }
    Ok(exit::OK)
}
