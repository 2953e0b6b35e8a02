//! The `orchestrate` binary: parse, dispatch, map the result to an exit code.

/// mimalloc instead of the system allocator: Candle allocates a fresh buffer for every tensor
/// op, and glibc serves the large ones with fresh `mmap`ed (page-faulting, zeroed) pages
/// each time; measured in `bench/notes/allocator.md`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(orchestrate::cli::main());
}
