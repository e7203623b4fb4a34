//! Key formats: how keys look, how they are generated and how a presented key is
//! recognized before any storage read.
//!
//! [`Template`] is the built-in format (`"kota_{tier}_{id:12:base32}_{secret:36:hex}"`);
//! implement [`Formatter`] for anything a template cannot express.

pub mod checksum;
mod encoding;
mod template;
#[cfg(test)]
mod tests;

pub use encoding::{Encoding, random_string};
pub use template::{FormatVars, Template, TemplateError};

/// What parsing a presented key yields.
///
/// `id` is borrowed from the key text; `tier` is the tier's name (not its segment text),
/// borrowed from the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'k> {
    /// The public id segment, if the format has one.
    pub id: Option<&'k str>,
    /// The name of the tier whose segment text the key carries, if the format has a tier.
    pub tier: Option<&'k str>,
}

/// A key format. [`Template`] is the built-in one; implement this for fully custom formats.
pub trait Formatter: Send + Sync + std::fmt::Debug + 'static {
    /// A new random key. `tier` is a tier name: required if the format has a tier
    /// segment (an unknown or missing tier is an error), ignored otherwise.
    fn generate(&self, tier: Option<&str>) -> Result<crate::PlainKey, FormatError>;

    /// Exact parse. `None` when the key is not of this format (including a wrong
    /// checksum). Never panics, whatever the input. The result borrows from the key
    /// (the id) and from the format (the tier name), hence `&'k self`; an implementation
    /// that borrows only from the key may write `&self`.
    fn parse<'k>(&'k self, key: &'k str) -> Option<ParsedKey<'k>>;

    /// Whether keys carry a public id segment (lookup by id).
    fn has_id(&self) -> bool;

    /// The `{secret}` segment of a key of this format: what a hash of the secret alone
    /// (imported from a system that hashed only that part) is checked against. `None`
    /// when the key is not of this format, or the format cannot tell its secret apart
    /// (the default: such a format cannot take secret-only hashes).
    fn secret<'k>(&'k self, key: &'k str) -> Option<&'k str> {
        let _ = key;
        None
    }

    /// Whether [`Formatter::secret`] finds the secret in keys of this format (a
    /// [`Template`] always does; the default is `false`).
    fn has_secret(&self) -> bool {
        false
    }

    /// Length in bytes of the constant text every key of this format starts with
    /// (8 for `"sk_live_{secret:32:base62}"`, 0 when it starts with `{tier}` or a secret).
    /// Used to choose lookup hints.
    fn fixed_prefix_len(&self) -> usize;

    /// A short description for errors and docs (the template text for [`Template`]).
    fn describe(&self) -> String;
}

/// Why a key could not be generated (or an encoding name not read).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The tier name is not one of the format's tiers.
    #[error("unknown tier `{tier}`")]
    UnknownTier {
        /// The tier name asked for.
        tier: String,
    },
    /// The format has a `{tier}` segment but no tier was given.
    #[error("this key format has a {{tier}} segment: a tier is required")]
    MissingTier,
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(#[from] getrandom::Error),
    /// Not the name of an [`Encoding`].
    #[error("unknown encoding `{name}` (expected base62, alnum, base64url, base32 or hex)")]
    UnknownEncoding {
        /// The name that was read.
        name: String,
    },
}
