//! The command line: every subcommand and its arguments.

use clap::{Parser, Subcommand};

use crate::cmd;

/// Generate, hash, verify and inspect API keys; check configurations; run the keypal service and manage it.
#[derive(Debug, Parser)]
#[command(
    name = "keypal",
    version,
    propagate_version = true,
    after_help = "Exit status: 0 on success; 1 when the key, hash or configuration checked is not \
                  valid (verify, inspect, config check); 2 on errors (bad usage, unreadable input, failures)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate new random keys (nothing is stored).
    Generate(cmd::generate::GenerateArgs),
    /// Hash a key into the self-describing string a store keeps.
    Hash(cmd::hash::HashArgs),
    /// Check a key against a stored hash (exit 0: valid, 1: invalid, 2: error).
    Verify(cmd::verify::VerifyArgs),
    /// Show a key's segments (never its secret) and check it against a format.
    Inspect(cmd::inspect::InspectArgs),
    /// Work with keypal.toml configurations: print the JSON schema, check a file.
    Config(cmd::config::ConfigArgs),
    /// Print a shell completion script.
    Completions(cmd::completions::CompletionsArgs),
    /// Run the keypal HTTP service.
    Serve(cmd::serve::ServeArgs),
    /// Make, list and revoke the management tokens scripts send to the management API.
    Tokens(cmd::tokens::TokensArgs),
    /// List, show and make applications (on the deployment's database).
    Apps(cmd::apps::AppsArgs),
    /// List, show, make, change, revoke and rotate an application's keys.
    Keys(cmd::keys::KeysArgs),
    /// Write the deployment's applications, keys (never a plaintext key) and, with
    /// --audit, audit log as NDJSON on stdout.
    Export(cmd::dump::ExportArgs),
    /// Restore a `keypal export` file into a deployment (what is present is skipped).
    Import(cmd::dump::ImportArgs),
}
