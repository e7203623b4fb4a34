//! Choosing a hash algorithm and its parameters, and where HMAC peppers come from.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use keypal::HashAlgorithm;
use keypal::config::SecretString;
use keypal::hash::{Argon2Params, Argon2idHasher, BcryptHasher, DEFAULT_BCRYPT_COST, Hasher, HmacSha256Hasher};
use keypal::hash::{Sha256Hasher, Sha512Hasher};

use crate::error::CliError;
use crate::io::{read_secret_file, secret_from_env};

/// The environment variable holding an HMAC pepper (a secret: never taken as a plain flag).
pub const PEPPER_ENV: &str = "KEYPAL_PEPPER";

/// bcrypt reads only this many bytes of a key.
const BCRYPT_MAX_KEY_LEN: usize = 72;

/// A hash algorithm, as written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    /// SHA-256 (the default): fast, right for random keys.
    Sha256,
    /// SHA-512.
    Sha512,
    /// HMAC-SHA-256 with a secret pepper (recommended; needs --pepper-id and a pepper).
    HmacSha256,
    /// argon2id, a slow password hash.
    Argon2id,
    /// bcrypt, a slow password hash (keys of at most 72 bytes).
    Bcrypt,
}

impl From<Algorithm> for HashAlgorithm {
    fn from(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => HashAlgorithm::Sha256,
            Algorithm::Sha512 => HashAlgorithm::Sha512,
            Algorithm::HmacSha256 => HashAlgorithm::HmacSha256,
            Algorithm::Argon2id => HashAlgorithm::Argon2id,
            Algorithm::Bcrypt => HashAlgorithm::Bcrypt,
        }
    }
}

/// Parameters of the algorithms, and the HMAC pepper.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Hash parameters")]
pub struct HashParams {
    /// bcrypt cost, 4 to 31 (each step doubles the work) [default: 10].
    #[arg(long, value_name = "N")]
    pub cost: Option<u32>,

    /// argon2id memory in KiB [default: 19456].
    #[arg(long, value_name = "KIB")]
    pub memory_kib: Option<u32>,

    /// argon2id passes over the memory [default: 2].
    #[arg(long, value_name = "N")]
    pub iterations: Option<u32>,

    /// argon2id lanes [default: 1].
    #[arg(long, value_name = "N")]
    pub parallelism: Option<u32>,

    /// Where the HMAC pepper comes from.
    #[command(flatten)]
    pub pepper: PepperArgs,
}

/// Where an HMAC pepper comes from: a file, or the `KEYPAL_PEPPER` environment variable.
#[derive(Debug, Clone, Args)]
pub struct PepperArgs {
    /// HMAC: the pepper's id, written into the stored hash (1 to 32 of [A-Za-z0-9_-]).
    #[arg(long, value_name = "ID", env = "KEYPAL_PEPPER_ID", hide_env_values = true)]
    pub pepper_id: Option<String>,

    /// HMAC: file holding the pepper (one trailing newline is ignored). Without it the
    /// pepper is read from the environment variable KEYPAL_PEPPER.
    #[arg(long, value_name = "FILE", env = "KEYPAL_PEPPER_FILE", hide_env_values = true)]
    pub pepper_file: Option<PathBuf>,
}

impl PepperArgs {
    /// The pepper, from `--pepper-file` or else `KEYPAL_PEPPER`; `None` when neither is given.
    pub fn pepper(&self) -> Result<Option<SecretString>, CliError> {
        if let Some(path) = &self.pepper_file {
            return read_secret_file(path, "pepper").map(Some);
        }
        secret_from_env(PEPPER_ENV)
    }

    /// An HMAC-SHA-256 hasher holding the pepper under `kid`.
    pub fn hmac_hasher(&self, kid: &str) -> Result<HmacSha256Hasher, CliError> {
        let pepper = self.pepper()?.ok_or_else(|| {
            CliError::new(format!(
                "hmac-sha256 needs the pepper of id `{kid}`: give --pepper-file FILE or set {PEPPER_ENV}"
            ))
        })?;
        HmacSha256Hasher::new([(kid.to_owned(), pepper.expose().to_vec())], kid)
            .map_err(|e| CliError::new(e.to_string()))
    }
}

impl HashParams {
    /// The hasher for `algorithm` with these parameters. Cost parameters of another
    /// algorithm are refused rather than ignored (the pepper options, which may come from
    /// the environment, are ignored by other algorithms).
    pub fn hasher(&self, algorithm: Algorithm) -> Result<Arc<dyn Hasher>, CliError> {
        let argon2_given =
            [("--memory-kib", self.memory_kib), ("--iterations", self.iterations), ("--parallelism", self.parallelism)]
                .into_iter()
                .find_map(|(option, value)| value.map(|_| option));
        let only = |option: &str, applies: &str| {
            CliError::new(format!("{option} only applies to {applies} (the algorithm is {})", name(algorithm)))
        };
        if self.cost.is_some() && algorithm != Algorithm::Bcrypt {
            return Err(only("--cost", "bcrypt"));
        }
        if let Some(option) = argon2_given
            && algorithm != Algorithm::Argon2id
        {
            return Err(only(option, "argon2id"));
        }
        Ok(match algorithm {
            Algorithm::Sha256 => Arc::new(Sha256Hasher),
            Algorithm::Sha512 => Arc::new(Sha512Hasher),
            Algorithm::HmacSha256 => {
                let kid = self.pepper.pepper_id.as_deref().ok_or_else(|| {
                    CliError::new(
                        "hmac-sha256 needs --pepper-id ID (or KEYPAL_PEPPER_ID): the id is stored in the hash",
                    )
                })?;
                Arc::new(self.pepper.hmac_hasher(kid)?)
            }
            Algorithm::Argon2id => {
                let defaults = Argon2Params::default();
                let params = Argon2Params {
                    memory_kib: self.memory_kib.unwrap_or(defaults.memory_kib),
                    iterations: self.iterations.unwrap_or(defaults.iterations),
                    parallelism: self.parallelism.unwrap_or(defaults.parallelism),
                };
                Arc::new(Argon2idHasher::new(params).map_err(|e| CliError::new(e.to_string()))?)
            }
            Algorithm::Bcrypt => Arc::new(
                BcryptHasher::new(self.cost.unwrap_or(DEFAULT_BCRYPT_COST))
                    .map_err(|e| CliError::new(format!("--cost: {e}")))?,
            ),
        })
    }
}

/// Hashes `key` with `hasher`, refusing what the algorithm cannot hash faithfully.
pub fn hash_key(hasher: &dyn Hasher, key: &str) -> Result<String, CliError> {
    if hasher.algorithm() == "bcrypt" && key.len() > BCRYPT_MAX_KEY_LEN {
        return Err(CliError::new(format!(
            "bcrypt reads only {BCRYPT_MAX_KEY_LEN} bytes and this key is {} bytes: choose another algorithm",
            key.len()
        )));
    }
    let stored = hasher.hash(key.as_bytes());
    if stored.is_empty() {
        return Err(CliError::new(format!("{} could not hash the key", hasher.algorithm())));
    }
    Ok(stored)
}

/// The algorithm's name on the command line (`hmac-sha256`, ...).
pub fn name(algorithm: Algorithm) -> &'static str {
    HashAlgorithm::from(algorithm).name()
}
