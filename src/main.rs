//! The `tokengate` binary: parse the command line, set up logging, run. Errors become a
//! message on stderr and exit code 1, never a panic.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = tokengate::cli::Cli::parse();
    tokengate::telemetry::init();
    match tokengate::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
