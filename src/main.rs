//! The `tokengate` binary: parse the command line, set up logging, run. Errors become a
//! message on stderr and exit code 1, never a panic.

use std::process::ExitCode;

use clap::Parser as _;

// Many small short-lived allocations per request (headers, form fields, JSON): mimalloc's
// thread-local free lists cost less than glibc's arenas here (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = tokengate::cli::Cli::parse();
    let log_guard = tokengate::telemetry::init();
    let outcome = tokengate::cli::run(cli);
    // The queued log lines go out before the error and the exit code.
    drop(log_guard);
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
