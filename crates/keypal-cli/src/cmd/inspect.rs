//! `keypal inspect`: a key's segments under a format. The secret is never shown, only
//! its length and encoding.

use clap::Args;
use keypal::format::{Template, checksum};
use keypal::{Formatter, ParsedKey, PlainKey};

use crate::error::{CliError, CmdResult, Status};
use crate::format::FormatArgs;
use crate::io::{Out, read_key};

/// Arguments of `keypal inspect`.
#[derive(Debug, Args)]
#[command(after_help = "Exits 1 when the key is not of the format or its checksum does not match.\n\n\
    Examples:\n  \
    keypal inspect \"$KEY\" --prefix sk_live\n  \
    keypal inspect - --template 'kota_{tier}_{id:12:base32}_{secret:36:hex}' --tier free --tier team < key.txt")]
pub struct InspectArgs {
    /// The key. `-` reads it from stdin; one trailing newline is ignored.
    #[arg(value_name = "KEY", allow_hyphen_values = true)]
    pub key: String,

    /// The format the key should have (the same options as `generate`).
    #[command(flatten)]
    pub format: FormatArgs,

    /// A text the {tier} segment may hold; repeat it for each tier.
    #[arg(long = "tier", value_name = "TEXT")]
    pub tiers: Vec<String>,

    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// What the `{checksum}` segment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checksum {
    /// The format has no checksum.
    None,
    /// It matches the text before it.
    Valid,
    /// It does not: a typo, or a key made up by hand.
    Invalid,
}

impl Checksum {
    fn name(self) -> Option<&'static str> {
        match self {
            Checksum::None => None,
            Checksum::Valid => Some("valid"),
            Checksum::Invalid => Some("invalid"),
        }
    }
}

/// Runs `keypal inspect`.
pub fn run(args: &InspectArgs) -> CmdResult {
    let template = args.format.template(&args.tiers)?;
    let key = read_key(Some(&args.key))?;

    let without = without_checksum(args, &template)?;

    let (parsed, checksum) = if let Some(parsed) = template.parse(key.expose()) {
        (parsed, if template.has_checksum() { Checksum::Valid } else { Checksum::None })
    } else if let Some(parsed) = without.as_ref().and_then(|t| parse_before_checksum(t, &key)) {
        (parsed, Checksum::Invalid)
    } else {
        return Err(CliError::rejected(not_of_format(&template, &key, &args.tiers)));
    };
    print(args, &template, &key, parsed, checksum)?;
    if checksum == Checksum::Invalid {
        return Err(CliError::rejected("the checksum does not match: the key has a typo or was not made by keypal"));
    }
    Ok(Status::Success)
}

/// The template without its final `{checksum}`, to read a key whose checksum is wrong
/// (`{checksum}` is always last and always [`checksum::LEN`] characters).
fn without_checksum(args: &InspectArgs, template: &Template) -> Result<Option<Template>, CliError> {
    if !template.has_checksum() {
        return Ok(None);
    }
    let Some(source) = template.source().strip_suffix("{checksum}") else {
        return Ok(None);
    };
    Template::parse(source, &args.format.vars(&args.tiers))
        .map(Some)
        .map_err(|e| CliError::new(format!("--template: {e}")))
}

/// The key read by the template without checksum, its last [`checksum::LEN`] characters
/// left out.
fn parse_before_checksum<'k>(template: &'k Template, key: &'k PlainKey) -> Option<ParsedKey<'k>> {
    let text = key.expose();
    let body = text.get(..text.len().checked_sub(checksum::LEN)?)?;
    template.parse(body)
}

/// Why the key is not of the format, as far as can be said without showing it.
fn not_of_format(template: &Template, key: &PlainKey, tiers: &[String]) -> String {
    let mut message = format!("the key is not of the format `{}`", template.source());
    if template.has_tier() {
        message.push_str(&format!(" with the tier texts {}", tiers.join(", ")));
    }
    if !template.has_tier()
        && let Ok(sample) = template.generate(tiers.first().map(String::as_str))
        && sample.expose().len() != key.expose().len()
    {
        message.push_str(&format!(
            " (its keys are {} characters long, this one is {})",
            sample.expose().len(),
            key.expose().len()
        ));
    }
    message
}

/// Prints the segments. The key's secret is never printed: only its length and encoding.
fn print(
    args: &InspectArgs,
    template: &Template,
    key: &PlainKey,
    parsed: ParsedKey<'_>,
    checksum: Checksum,
) -> Result<(), CliError> {
    // The constant text every key of the format starts with: template text, not secret.
    let prefix = key.expose().get(..template.fixed_prefix_len()).filter(|p| !p.is_empty());
    let uses = |segment: &str| template.source().contains(segment);
    let app = args.format.app.as_deref().filter(|_| uses("{app}"));
    let label = args.format.label.as_deref().filter(|_| uses("{label}"));
    let encoding = template.secret_encoding().name();

    let mut out = Out::new();
    if args.json {
        let value = serde_json::json!({
            "format": template.source(),
            "length": key.expose().len(),
            "prefix": prefix,
            "app": app,
            "label": label,
            "tier": parsed.tier,
            "id": parsed.id,
            "secret": { "length": template.secret_len(), "encoding": encoding },
            "checksum": checksum.name(),
            "valid": checksum != Checksum::Invalid,
        });
        out.line(&value.to_string())?;
    } else {
        let mut line = |name: &str, value: &str| out.line(&format!("{name:<9} {value}"));
        line("format", template.source())?;
        line("length", &format!("{} characters", key.expose().len()))?;
        for (name, value) in
            [("prefix", prefix), ("app", app), ("label", label), ("tier", parsed.tier), ("id", parsed.id)]
        {
            if let Some(value) = value {
                line(name, value)?;
            }
        }
        line("secret", &format!("{} characters, {encoding} (not shown)", template.secret_len()))?;
        line("checksum", checksum.name().unwrap_or("none (the format has no checksum)"))?;
    }
    out.finish()
}
