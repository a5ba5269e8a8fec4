//! The `tds` binary: parse the command line, run, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tds::cli::Cli::parse();
    match tds::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tds: {e:#}");
            ExitCode::from(1)
        }
    }
}
