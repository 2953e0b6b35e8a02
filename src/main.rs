//! The `orchestrate` binary: parse, dispatch, map the result to an exit code.

fn main() {
    std::process::exit(orchestrate::cli::main());
}
