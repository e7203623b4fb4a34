//! The built-in key format: a template of literals and typed segments.

use std::fmt;
use std::ops::RangeInclusive;

use zeroize::Zeroize;

use super::encoding::push_random;
use super::{Encoding, FormatError, Formatter, ParsedKey, checksum};
use crate::PlainKey;

const ID_LEN: RangeInclusive<usize> = 1..=64;
const SECRET_LEN: RangeInclusive<usize> = 16..=256;
const ID_SHAPE: &str = "{id:LENGTH:ENCODING}";
const SECRET_SHAPE: &str = "{secret:LENGTH:ENCODING}";

/// Values of a template's fixed-text segments.
#[derive(Debug, Clone, Default)]
pub struct FormatVars {
    /// Text of `{prefix}`.
    pub prefix: Option<String>,
    /// Text of `{app}`: the application's short public id.
    pub app: Option<String>,
    /// Text of `{label}`.
    pub label: Option<String>,
    /// The tiers `{tier}` can stand for, as (tier name, segment text) pairs.
    pub tiers: Vec<(String, String)>,
}

/// Why a template was rejected. Messages name the segment and its byte position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template is the empty string.
    #[error("the template is empty")]
    Empty,
    /// A `{` without its `}`.
    #[error("`{{` at byte {position} is not closed by `}}`")]
    Unclosed {
        /// Byte offset of the `{`.
        position: usize,
    },
    /// A `}` outside a segment.
    #[error("unexpected `}}` at byte {position} (braces may only enclose segments)")]
    StrayBrace {
        /// Byte offset of the `}`.
        position: usize,
    },
    /// A segment name that is not one of the grammar's.
    #[error(
        "unknown segment `{{{segment}}}` at byte {position} \
         (expected prefix, app, label, tier, id, secret or checksum)"
    )]
    UnknownSegment {
        /// The text between the braces.
        segment: String,
        /// Byte offset of the `{`.
        position: usize,
    },
    /// A known segment with the wrong arguments (`{secret:32}`, `{tier:x}`).
    #[error("segment `{{{segment}}}` at byte {position}: expected `{expected}`")]
    BadArguments {
        /// The text between the braces.
        segment: String,
        /// Byte offset of the `{`.
        position: usize,
        /// The segment's expected shape.
        expected: &'static str,
    },
    /// An id or secret length that is not a number in the allowed range.
    #[error("segment `{{{segment}}}` at byte {position}: the length must be a number in {min}..={max}")]
    BadLength {
        /// The text between the braces.
        segment: String,
        /// Byte offset of the `{`.
        position: usize,
        /// Smallest allowed length.
        min: usize,
        /// Largest allowed length.
        max: usize,
    },
    /// An encoding name that is not one of [`Encoding`]'s.
    #[error(
        "segment `{{{segment}}}` at byte {position}: unknown encoding `{encoding}` \
         (expected base62, alnum, base64url, base32 or hex)"
    )]
    UnknownEncoding {
        /// The text between the braces.
        segment: String,
        /// Byte offset of the `{`.
        position: usize,
        /// The encoding name that was read.
        encoding: String,
    },
    /// `{prefix}`, `{app}`, `{label}` or `{tier}` is used but [`FormatVars`] has no
    /// (or an empty) value for it.
    #[error("segment `{{{segment}}}` at byte {position} has no value in the format variables")]
    MissingVar {
        /// The segment name.
        segment: &'static str,
        /// Byte offset of the `{`.
        position: usize,
    },
    /// A value in [`FormatVars`] that cannot be used.
    #[error("invalid value for {name}: {reason}")]
    InvalidVar {
        /// Which value (`prefix`, `tier "pro"`, ...).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A second `{secret}`, `{id}`, `{tier}` or `{checksum}`.
    #[error("second `{{{segment}}}` segment at byte {position} (at most one is allowed)")]
    Duplicate {
        /// The segment name.
        segment: &'static str,
        /// Byte offset of the second segment's `{`.
        position: usize,
    },
    /// No `{secret:N:ENCODING}` segment.
    #[error("the template has no `{{secret:LENGTH:ENCODING}}` segment")]
    MissingSecret,
    /// Something follows `{checksum}`.
    #[error("`{{checksum}}` at byte {position} must be the last segment")]
    ChecksumNotLast {
        /// Byte offset of the `{checksum}`.
        position: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Literal text, including the values of `{prefix}`, `{app}` and `{label}`.
    Literal(String),
    Tier,
    Id {
        len: usize,
        encoding: Encoding,
    },
    Secret {
        len: usize,
        encoding: Encoding,
    },
    Checksum,
}

impl Segment {
    fn len(&self, tier_len: usize) -> usize {
        match self {
            Segment::Literal(text) => text.len(),
            Segment::Tier => tier_len,
            Segment::Id { len, .. } | Segment::Secret { len, .. } => *len,
            Segment::Checksum => checksum::LEN,
        }
    }
}

/// A parsed key template: the built-in [`Formatter`].
///
/// A template is literal text and segments: `{prefix}`, `{app}`, `{label}` (fixed texts
/// from [`FormatVars`]), `{tier}` (one of the tiers' segment texts),
/// `{id:N:ENCODING}` (public lookup id, 1..=64 characters, at most one),
/// `{secret:N:ENCODING}` (16..=256 characters, exactly one) and `{checksum}`
/// (6 base62 characters of CRC32 over everything before it; must come last).
/// Literals may not contain braces. Every segment but `{tier}` has a fixed length,
/// so parsing a key is exact and allocation-free.
///
/// ```
/// use keypal::format::{FormatVars, Formatter, Template};
///
/// let vars = FormatVars {
///     tiers: vec![("free".into(), "free".into()), ("team".into(), "team".into())],
///     ..FormatVars::default()
/// };
/// let format = Template::parse("kota_{tier}_{id:12:base32}_{secret:36:hex}", &vars)?;
///
/// let key = format.generate(Some("team"))?;
/// assert_eq!(key.expose().len(), "kota_team_".len() + 12 + 1 + 36);
///
/// let parsed = format.parse(key.expose()).expect("a key of this format");
/// assert_eq!(parsed.tier, Some("team"));
/// assert_eq!(parsed.id, Some(&key.expose()[10..22]));
/// assert_eq!(format.parse("kota_team_not-a-key"), None);
///
/// let simple = Template::simple(Some("sk_live"), 32, keypal::format::Encoding::Base62)?;
/// assert_eq!(simple.source(), "sk_live_{secret:32:base62}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
    /// (name, segment text); empty unless the template has `{tier}`.
    tiers: Vec<(String, String)>,
    /// Total length of all segments but `{tier}`.
    fixed_len: usize,
    secret_len: usize,
    secret_encoding: Encoding,
    has_tier: bool,
    has_id: bool,
    has_checksum: bool,
}

impl Template {
    /// Parses `template`, taking the texts of `{prefix}`, `{app}`, `{label}` and
    /// `{tier}` from `vars`.
    pub fn parse(template: &str, vars: &FormatVars) -> Result<Template, TemplateError> {
        if template.is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut builder = Builder::default();
        let mut pos = 0;
        while let Some(rest) = template.get(pos..).filter(|rest| !rest.is_empty()) {
            let Some(brace) = rest.find(['{', '}']) else {
                builder.literal(rest)?;
                break;
            };
            builder.literal(&rest[..brace])?;
            let open = pos + brace;
            if rest[brace..].starts_with('}') {
                return Err(TemplateError::StrayBrace { position: open });
            }
            let body = &rest[brace + 1..];
            match body.find(['{', '}']) {
                Some(close) if body[close..].starts_with('}') => {
                    builder.segment(&body[..close], open, vars)?;
                    pos = open + close + 2;
                }
                _ => return Err(TemplateError::Unclosed { position: open }),
            }
        }
        builder.finish(template)
    }

    /// The template for the simple options: `{prefix}_{secret:LENGTH:ENCODING}`, or
    /// just the secret without a prefix. Its [`source`](Template::source) has the prefix
    /// written out (`"sk_live_{secret:32:base62}"`).
    pub fn simple(prefix: Option<&str>, length: usize, encoding: Encoding) -> Result<Template, TemplateError> {
        let secret = format!("{{secret:{length}:{encoding}}}");
        let Some(prefix) = prefix else {
            return Template::parse(&secret, &FormatVars::default());
        };
        let vars = FormatVars { prefix: Some(prefix.to_owned()), ..FormatVars::default() };
        let mut template = Template::parse(&format!("{{prefix}}_{secret}"), &vars)?;
        template.source = format!("{prefix}_{secret}");
        Ok(template)
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template has a `{tier}` segment.
    pub fn has_tier(&self) -> bool {
        self.has_tier
    }

    /// Whether the template ends with a `{checksum}` segment.
    pub fn has_checksum(&self) -> bool {
        self.has_checksum
    }

    /// Number of characters of the secret.
    pub fn secret_len(&self) -> usize {
        self.secret_len
    }

    /// Encoding of the secret.
    pub fn secret_encoding(&self) -> Encoding {
        self.secret_encoding
    }

    /// The tier name whose segment text is exactly `text`.
    fn tier_named(&self, text: &[u8]) -> Option<&str> {
        self.tiers.iter().find(|(_, tier_text)| tier_text.as_bytes() == text).map(|(name, _)| name.as_str())
    }

    fn write_key(&self, key: &mut String, tier_text: &str) -> Result<(), FormatError> {
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => key.push_str(text),
                Segment::Tier => key.push_str(tier_text),
                Segment::Id { len, encoding } | Segment::Secret { len, encoding } => {
                    push_random(key, *encoding, *len)?;
                }
                Segment::Checksum => {
                    let sum = checksum::compute(key);
                    key.extend(sum.map(char::from));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Formatter for Template {
    /// A new key; `tier` is ignored when the template has no `{tier}` segment.
    fn generate(&self, tier: Option<&str>) -> Result<PlainKey, FormatError> {
        let tier_text = if self.has_tier {
            let name = tier.ok_or(FormatError::MissingTier)?;
            let (_, text) = self
                .tiers
                .iter()
                .find(|(tier_name, _)| tier_name == name)
                .ok_or_else(|| FormatError::UnknownTier { tier: name.to_owned() })?;
            text.as_str()
        } else {
            ""
        };
        // Exact capacity: the buffer never reallocates, so no copy of the secret is left behind.
        let mut key = String::with_capacity(self.fixed_len + tier_text.len());
        match self.write_key(&mut key, tier_text) {
            Ok(()) => Ok(PlainKey::new(key)),
            Err(err) => {
                key.zeroize();
                Err(err)
            }
        }
    }

    fn parse<'k>(&'k self, key: &'k str) -> Option<ParsedKey<'k>> {
        self.split(key).map(|(parsed, _)| parsed)
    }

    fn has_id(&self) -> bool {
        self.has_id
    }

    fn secret<'k>(&'k self, key: &'k str) -> Option<&'k str> {
        self.split(key).map(|(_, secret)| secret)
    }

    fn has_secret(&self) -> bool {
        true
    }

    fn fixed_prefix_len(&self) -> usize {
        match self.segments.first() {
            Some(Segment::Literal(text)) => text.len(),
            _ => 0,
        }
    }

    fn describe(&self) -> String {
        self.source.clone()
    }
}

impl Template {
    /// The exact parse of `key`: its id and tier, and its secret segment.
    fn split<'k>(&'k self, key: &'k str) -> Option<(ParsedKey<'k>, &'k str)> {
        let bytes = key.as_bytes();
        // Every segment but `{tier}` has a fixed length, so the tier text's length is known.
        let tier_len = bytes.len().checked_sub(self.fixed_len)?;
        if tier_len > 0 && !self.has_tier {
            return None;
        }
        let mut parsed = ParsedKey { id: None, tier: None };
        let mut secret = None;
        let mut pos = 0;
        for segment in &self.segments {
            let end = pos + segment.len(tier_len);
            let part = bytes.get(pos..end)?;
            match segment {
                Segment::Literal(text) => {
                    if !same_bytes(part, text.as_bytes()) {
                        return None;
                    }
                }
                Segment::Tier => parsed.tier = Some(self.tier_named(part)?),
                Segment::Id { encoding, .. } => {
                    if !encoding.contains_all(part) {
                        return None;
                    }
                    parsed.id = key.get(pos..end);
                }
                Segment::Secret { encoding, .. } => {
                    if !encoding.contains_all(part) {
                        return None;
                    }
                    secret = key.get(pos..end);
                }
                Segment::Checksum => {
                    if !checksum::verify(key.get(..pos)?, part) {
                        return None;
                    }
                }
            }
            pos = end;
        }
        // Every template has exactly one secret segment.
        Some((parsed, secret?))
    }
}

/// Accumulates segments while a template is read, enforcing the grammar's rules.
#[derive(Default)]
struct Builder {
    segments: Vec<Segment>,
    tiers: Vec<(String, String)>,
    fixed_len: usize,
    secret: Option<(usize, Encoding)>,
    has_tier: bool,
    has_id: bool,
    /// Byte offset of `{checksum}`, once seen.
    checksum_at: Option<usize>,
}

impl Builder {
    fn push(&mut self, segment: Segment) -> Result<(), TemplateError> {
        if let Some(position) = self.checksum_at {
            return Err(TemplateError::ChecksumNotLast { position });
        }
        self.fixed_len += segment.len(0);
        match (self.segments.last_mut(), segment) {
            (Some(Segment::Literal(last)), Segment::Literal(text)) => last.push_str(&text),
            (_, segment) => self.segments.push(segment),
        }
        Ok(())
    }

    fn literal(&mut self, text: &str) -> Result<(), TemplateError> {
        if text.is_empty() {
            return Ok(());
        }
        self.push(Segment::Literal(text.to_owned()))
    }

    /// Reads the segment `{body}` whose `{` is at byte `position`.
    fn segment(&mut self, body: &str, position: usize, vars: &FormatVars) -> Result<(), TemplateError> {
        let (name, args) = match body.split_once(':') {
            Some((name, args)) => (name, Some(args)),
            None => (body, None),
        };
        let bad_arguments = |expected| TemplateError::BadArguments { segment: body.to_owned(), position, expected };
        match (name, args) {
            ("prefix", None) => self.var("prefix", vars.prefix.as_deref(), position),
            ("app", None) => self.var("app", vars.app.as_deref(), position),
            ("label", None) => self.var("label", vars.label.as_deref(), position),
            ("tier", None) => self.tier(vars, position),
            ("checksum", None) => {
                if self.checksum_at.is_some() {
                    return Err(TemplateError::Duplicate { segment: "checksum", position });
                }
                self.push(Segment::Checksum)?;
                self.checksum_at = Some(position);
                Ok(())
            }
            ("id", Some(args)) => {
                if self.has_id {
                    return Err(TemplateError::Duplicate { segment: "id", position });
                }
                let (len, encoding) = sized(body, args, position, ID_LEN, ID_SHAPE)?;
                self.push(Segment::Id { len, encoding })?;
                self.has_id = true;
                Ok(())
            }
            ("secret", Some(args)) => {
                if self.secret.is_some() {
                    return Err(TemplateError::Duplicate { segment: "secret", position });
                }
                let (len, encoding) = sized(body, args, position, SECRET_LEN, SECRET_SHAPE)?;
                self.push(Segment::Secret { len, encoding })?;
                self.secret = Some((len, encoding));
                Ok(())
            }
            ("prefix" | "app" | "label" | "tier" | "checksum", Some(_)) => Err(bad_arguments("no arguments")),
            ("id", None) => Err(bad_arguments(ID_SHAPE)),
            ("secret", None) => Err(bad_arguments(SECRET_SHAPE)),
            _ => Err(TemplateError::UnknownSegment { segment: body.to_owned(), position }),
        }
    }

    fn var(&mut self, segment: &'static str, value: Option<&str>, position: usize) -> Result<(), TemplateError> {
        let value = value.filter(|value| !value.is_empty()).ok_or(TemplateError::MissingVar { segment, position })?;
        check_text(value, || segment.to_owned())?;
        self.literal(value)
    }

    fn tier(&mut self, vars: &FormatVars, position: usize) -> Result<(), TemplateError> {
        if self.has_tier {
            return Err(TemplateError::Duplicate { segment: "tier", position });
        }
        if vars.tiers.is_empty() {
            return Err(TemplateError::MissingVar { segment: "tier", position });
        }
        for (i, (name, text)) in vars.tiers.iter().enumerate() {
            let label = || format!("tier {name:?}");
            let invalid = |reason| TemplateError::InvalidVar { name: label(), reason };
            if name.is_empty() {
                return Err(invalid("the tier name is empty"));
            }
            check_text(text, label)?;
            let earlier = &vars.tiers[..i];
            if earlier.iter().any(|(other, _)| other == name) {
                return Err(invalid("the tier name is listed twice"));
            }
            if earlier.iter().any(|(_, other)| other == text) {
                return Err(invalid("another tier has the same segment text"));
            }
        }
        self.push(Segment::Tier)?;
        self.tiers.clone_from(&vars.tiers);
        self.has_tier = true;
        Ok(())
    }

    fn finish(self, source: &str) -> Result<Template, TemplateError> {
        let (secret_len, secret_encoding) = self.secret.ok_or(TemplateError::MissingSecret)?;
        Ok(Template {
            source: source.to_owned(),
            segments: self.segments,
            tiers: self.tiers,
            fixed_len: self.fixed_len,
            secret_len,
            secret_encoding,
            has_tier: self.has_tier,
            has_id: self.has_id,
            has_checksum: self.checksum_at.is_some(),
        })
    }
}

/// A fixed text (a variable's value or a tier's segment text) must be non-empty and
/// brace-free.
fn check_text(text: &str, name: impl FnOnce() -> String) -> Result<(), TemplateError> {
    let reason = if text.is_empty() {
        "the text is empty"
    } else if text.contains(['{', '}']) {
        "the text contains `{` or `}`"
    } else {
        return Ok(());
    };
    Err(TemplateError::InvalidVar { name: name(), reason })
}

/// Reads the `LENGTH:ENCODING` arguments of the `{id:..}` or `{secret:..}` segment
/// `{body}` at byte `position`.
fn sized(
    body: &str,
    args: &str,
    position: usize,
    lengths: RangeInclusive<usize>,
    shape: &'static str,
) -> Result<(usize, Encoding), TemplateError> {
    let segment = || body.to_owned();
    let (len, encoding) = args.split_once(':').ok_or_else(|| TemplateError::BadArguments {
        segment: segment(),
        position,
        expected: shape,
    })?;
    let len = Some(len)
        .filter(|len| !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|len| len.parse::<usize>().ok())
        .filter(|len| lengths.contains(len))
        .ok_or_else(|| TemplateError::BadLength {
            segment: segment(),
            position,
            min: *lengths.start(),
            max: *lengths.end(),
        })?;
    let encoding = encoding.parse().map_err(|_| TemplateError::UnknownEncoding {
        segment: segment(),
        position,
        encoding: encoding.to_owned(),
    })?;
    Ok((len, encoding))
}

/// Byte equality for the short literals of a template, inline and eight bytes at a
/// time: a call to the C library's `memcmp` costs more than comparing a few bytes.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    fn word(bytes: &[u8]) -> u64 {
        <[u8; 8]>::try_from(bytes).map_or(0, u64::from_ne_bytes)
    }
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a_words.remainder().iter().zip(b_words.remainder()).fold(0, |diff, (x, y)| diff | u64::from(x ^ y));
    a_words.zip(b_words).fold(tail, |diff, (x, y)| diff | (word(x) ^ word(y))) == 0
}
