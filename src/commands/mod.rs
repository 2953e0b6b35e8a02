//! One module per subcommand: its clap `Args` and its `execute`, returning the exit code.

pub mod best;
pub mod config;
pub mod diff;
pub mod inspect;
pub mod ls;
pub mod plan;
pub mod report;
pub mod run;
pub mod status;
pub mod worker;
