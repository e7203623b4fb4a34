//! `keypal generate`: new random keys, one per line, or JSON lines with their hashes.

use clap::Args;
use keypal::Formatter;
use serde_json::Value;

use crate::error::{CliError, CmdResult, Status};
use crate::format::FormatArgs;
use crate::hashing::{Algorithm, HashParams, hash_key};
use crate::io::Out;

/// Arguments of `keypal generate`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    keypal generate --prefix sk_live --length 32\n  \
    keypal generate --template 'kota_{tier}_{id:12:base32}_{secret:36:hex}' --tier free --count 5\n  \
    keypal generate --prefix sk_live --json --hash argon2id")]
pub struct GenerateArgs {
    /// The key format.
    #[command(flatten)]
    pub format: FormatArgs,

    /// The text of the {tier} segment (required when the template has one).
    #[arg(long, value_name = "TEXT")]
    pub tier: Option<String>,

    /// How many keys to generate.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,

    /// Print one JSON object per line: {"key": ..., "hash": ...}.
    #[arg(long)]
    pub json: bool,

    /// The hash algorithm of the JSON output [default: sha256].
    #[arg(long, value_name = "ALGORITHM", value_enum, requires = "json")]
    pub hash: Option<Algorithm>,

    /// Parameters of the hash algorithm.
    #[command(flatten)]
    pub params: HashParams,
}

/// Runs `keypal generate`.
pub fn run(args: &GenerateArgs) -> CmdResult {
    let tiers: Vec<String> = args.tier.iter().cloned().collect();
    let template = args.format.template(&tiers)?;
    if args.tier.is_some() && !template.has_tier() {
        return Err(CliError::new("--tier is given but the template has no {tier} segment"));
    }
    // Built even without --json, so that a cost option given for nothing is reported.
    let hasher = args.params.hasher(args.hash.unwrap_or(Algorithm::Sha256))?;
    let hasher = args.json.then_some(hasher);

    let mut out = Out::new();
    for _ in 0..args.count {
        let key = template.generate(args.tier.as_deref()).map_err(|e| CliError::caused("cannot generate a key", &e))?;
        match &hasher {
            Some(hasher) => {
                let hash = hash_key(hasher.as_ref(), key.expose())?;
                // Written by hand to keep the documented field order: key, then hash.
                let (key, hash) = (Value::from(key.expose()), Value::from(hash));
                out.line(&format!("{{\"key\":{key},\"hash\":{hash}}}"))?;
            }
            None => out.line(key.expose())?,
        }
    }
    out.finish()?;
    Ok(Status::Success)
}
