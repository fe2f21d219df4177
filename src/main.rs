//! The `ballast` binary: parse the command line and hand over to [`ballast::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    ballast::cli::main(ballast::cli::Cli::parse())
}
