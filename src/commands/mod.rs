//! One module per subcommand: its clap `Args` and its `execute`, returning the exit code.

pub mod config;
pub mod inspect;
pub mod plan;
pub mod run;
pub mod status;
pub mod worker;
