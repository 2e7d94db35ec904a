//! The `rulehook` binary: parse the command line and hand over to [`rulehook::cli`].

use std::process::ExitCode;

fn main() -> ExitCode {
    rulehook::cli::main()
}
