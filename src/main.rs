//! The `rulehook` binary: parse the command line and hand over to [`rulehook::cli`].

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: per event, glibc's malloc and free (with its arena
/// consolidation) cost more instructions than SQLite (docs/benchmarks.md). Only the binary sets
/// it; the library leaves the choice to whoever links it. Built without transparent huge pages
/// (`no_thp`): with them, its arenas kept ~9 MB more resident for an idle service.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    rulehook::cli::main()
}
