//! `keypal hash`: the self-describing stored hash of a key.

use clap::Args;

use crate::error::{CmdResult, Status};
use crate::hashing::{Algorithm, HashParams, hash_key};
use crate::io::{Out, read_key};

/// Arguments of `keypal hash`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    printf %s \"$KEY\" | keypal hash --algorithm argon2id\n  \
    KEYPAL_PEPPER=\"$(cat pepper)\" keypal hash - --algorithm hmac-sha256 --pepper-id 2025 < key.txt")]
pub struct HashArgs {
    /// The key. `-` or nothing reads it from stdin (which keeps it out of shell history
    /// and process lists); one trailing newline is ignored.
    #[arg(value_name = "KEY", allow_hyphen_values = true)]
    pub key: Option<String>,

    /// The hash algorithm.
    #[arg(long, short = 'a', value_name = "ALGORITHM", value_enum, default_value_t = Algorithm::Sha256)]
    pub algorithm: Algorithm,

    /// Parameters of the hash algorithm.
    #[command(flatten)]
    pub params: HashParams,
}

/// Runs `keypal hash`.
pub fn run(args: &HashArgs) -> CmdResult {
    let hasher = args.params.hasher(args.algorithm)?;
    let key = read_key(args.key.as_deref())?;
    let stored = hash_key(hasher.as_ref(), key.expose())?;
    let mut out = Out::new();
    out.line(&stored)?;
    out.finish()?;
    Ok(Status::Success)
}
