//! The `ballast` binary: parse the command line and hand over to [`ballast::cli`].

use clap::Parser;

/// mimalloc instead of glibc's malloc: a proxy allocates and frees many small short-lived
/// buffers and header maps per request, across worker threads, which mimalloc's per-thread free
/// lists serve with less work and less fragmentation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ballast::cli::main(ballast::cli::Cli::parse())
}
