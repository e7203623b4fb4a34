//! `keypal verify`: does a key match a stored hash? Answers by exit code.

use std::sync::Arc;

use clap::Args;
use keypal::Hashing;
use keypal::hash::{Hasher, Sha256Hasher};

use crate::error::{CliError, CmdResult, Status};
use crate::hashing::PepperArgs;
use crate::io::{Out, read_key};

/// The start of a stored HMAC-SHA-256 hash, before its pepper id.
const HMAC_PREFIX: &str = "$hmac-sha256$kid=";

/// The starts of the stored hashes keypal makes or imports.
const KNOWN_PREFIXES: [&str; 7] = ["$sha256$", "$sha512$", HMAC_PREFIX, "$argon2id$", "$2a$", "$2b$", "$2y$"];

/// Arguments of `keypal verify`.
#[derive(Debug, Args)]
#[command(after_help = "Prints `valid` (exit 0) or `invalid` (exit 1); errors exit 2.\n\n\
    Examples:\n  \
    keypal verify \"$KEY\" --hash '$sha256$9f86d08...'\n  \
    keypal verify - --hash \"$STORED\" < key.txt")]
pub struct VerifyArgs {
    /// The key. `-` reads it from stdin; one trailing newline is ignored.
    #[arg(value_name = "KEY", allow_hyphen_values = true)]
    pub key: String,

    /// The stored hash, as `keypal hash` prints it (sha256, sha512, hmac-sha256, argon2id
    /// or bcrypt `$2a$`/`$2b$`/`$2y$`).
    #[arg(long, value_name = "STORED")]
    pub hash: String,

    /// Where the pepper of an hmac-sha256 hash comes from (its id is read from the hash).
    #[command(flatten)]
    pub pepper: PepperArgs,
}

/// Runs `keypal verify`.
pub fn run(args: &VerifyArgs) -> CmdResult {
    let stored = args.hash.trim();
    if !KNOWN_PREFIXES.iter().any(|prefix| stored.starts_with(prefix)) {
        return Err(CliError::new(
            "--hash is not a stored hash keypal knows: expected $sha256$, $sha512$, $hmac-sha256$kid=, \
             $argon2id$ or a bcrypt $2a$/$2b$/$2y$ hash",
        ));
    }
    let current: Arc<dyn Hasher> = match stored.strip_prefix(HMAC_PREFIX) {
        Some(rest) => {
            let kid = rest.split_once('$').map_or(rest, |(kid, _)| kid);
            Arc::new(args.pepper.hmac_hasher(kid)?)
        }
        // SHA-512, argon2id and bcrypt are verified by the fallbacks every `Hashing` has.
        None => Arc::new(Sha256Hasher),
    };
    let key = read_key(Some(&args.key))?;
    // Constant-time comparison in the core.
    let valid = Hashing::new(current).verify(key.expose().as_bytes(), stored);

    let mut out = Out::new();
    out.line(if valid { "valid" } else { "invalid" })?;
    out.finish()?;
    Ok(if valid { Status::Success } else { Status::Rejected })
}
