//! `keypal`: generate, hash, verify and inspect API keys, check configurations, run
//! the keypal service, and manage a deployment (`keypal tokens`).
//!
//! Exit status: 0 on success, 1 when the thing checked is not valid (`verify`,
//! `inspect`, `config check`), 2 on errors (bad usage, unreadable input, failures).

mod cli;
mod cmd;
mod deployment;
mod error;
mod format;
mod hashing;
mod io;
mod table;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => cmd::generate::run(&args),
        Command::Hash(args) => cmd::hash::run(&args),
        Command::Verify(args) => cmd::verify::run(&args),
        Command::Inspect(args) => cmd::inspect::run(&args),
        Command::Config(args) => cmd::config::run(&args),
        Command::Completions(args) => cmd::completions::run(&args),
        Command::Serve(args) => cmd::serve::run(&args),
        Command::Tokens(args) => cmd::tokens::run(&args),
        Command::Apps(args) => cmd::apps::run(&args),
        Command::Keys(args) => cmd::keys::run(&args),
        Command::Export(args) => cmd::dump::export(&args),
        Command::Import(args) => cmd::dump::import(&args),
    };
    match result {
        Ok(status) => status.exit_code(),
        Err(err) => err.report(),
    }
}
