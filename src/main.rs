//! The `orchestrate` binary: parse, dispatch, map the result to an exit code.

/// mimalloc instead of the system allocator: Candle allocates a fresh buffer for every tensor
/// op, and glibc serves the large ones with fresh `mmap`ed (page-faulting, zeroed) pages
/// each time; measured in `bench/notes/allocator.md`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    die_quietly_on_closed_pipe();
    std::process::exit(orchestrate::cli::main());
}

/// Rust starts with SIGPIPE ignored, so every `println!` into a closed pipe
/// (`orchestrate plan --json | head -1`) panics. The default disposition ends the process
/// quietly instead, as for any Unix filter, whatever command is printing. A `run` stopped
/// this way is resumable as after any crash: its workers get SIGTERM when it dies
/// (`PR_SET_PDEATHSIG`), and child processes start with the default disposition anyway.
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: signal() with a valid signal number and SIG_DFL touches no memory of ours; no
    // other thread exists yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
