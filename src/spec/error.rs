//! Errors of spec loading and validation.
//!
//! Every problem names where the offending value came from (a file, an environment variable,
//! a `--set` flag), the dotted key, the value and what is allowed, so a user can fix the spec
//! without reading the source.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a spec: where, which key, which value, what is allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The source that set the key: a file path, `environment variable X`, `--set k=v`.
    pub origin: String,
    /// Dotted key path, e.g. `optimizer.lr`.
    pub key: String,
    /// The offending value as TOML, when there is one.
    pub value: Option<String>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One problem, one line: a flag or a parser's message may echo a value as typed.
        let (origin, message) = (
            escape_controls(&self.origin),
            escape_controls(&self.message),
        );
        match &self.value {
            Some(v) => write!(f, "{origin}: `{}` = {v}: {message}", self.key),
            None => write!(f, "{origin}: `{}`: {message}", self.key),
        }
    }
}

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file named on the command line does not exist or cannot be read.
    #[error("cannot read spec file {}: {source}", shown(file))]
    Unreadable {
        file: PathBuf,
        #[source]
        source: ReadError,
    },
    /// A file named by `extends` cannot be read.
    #[error("{}: cannot read `extends` file {}: {source}", shown(by), shown(file))]
    Extends {
        by: PathBuf,
        file: PathBuf,
        #[source]
        source: ReadError,
    },
    /// The `extends` chain comes back to a file already in it.
    #[error("`extends` cycle: {chain}")]
    ExtendsCycle { chain: String },
    /// A file is not valid TOML.
    #[error("{}:{line}:{column}: TOML syntax error: {message}", shown(file))]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A `--set` flag that is not `key=value`.
    #[error("--set {}: {message}", escape_controls(arg))]
    BadSet { arg: String, message: String },
    /// Keys or values that are not allowed; one problem a line.
    #[error("{}", join_lines(problems))]
    Invalid { problems: Vec<Problem> },
}

/// The largest spec or `extends` file read: a spec is a page of text, and a bound keeps a
/// path such as `/dev/zero` or a huge log file from being read into memory.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Why one spec file (the named one or an `extends` file) could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A FIFO, device, socket or directory: reading it could block or never end.
    #[error("it is {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    /// More bytes than [`MAX_SPEC_BYTES`].
    #[error("it is larger than {} MiB, the limit for a spec file", MAX_SPEC_BYTES >> 20)]
    TooLarge,
    /// Not UTF-8 text.
    #[error("it is not UTF-8 text")]
    NotText,
}

impl SpecError {
    /// One problem with `key` of the spec file `file`, whose value is `value`.
    pub fn one(file: &std::path::Path, key: &str, value: Option<String>, message: String) -> Self {
        SpecError::Invalid {
            problems: vec![Problem {
                origin: file.display().to_string(),
                key: key.into(),
                value,
                message,
            }],
        }
    }

    /// Whether the user named a spec file that cannot be read (a usage error, not a bad spec).
    pub fn is_unreadable_input(&self) -> bool {
        matches!(
            self,
            SpecError::Unreadable { .. } | SpecError::BadSet { .. }
        )
    }
}

/// `text` with control characters (a newline above all) written as escapes, so that a path
/// or flag echoed in an error keeps it on one line and cannot write to the terminal.
pub fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn shown(path: &std::path::Path) -> String {
    escape_controls(&path.display().to_string())
}

fn join_lines(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    lines.join("\n")
}
