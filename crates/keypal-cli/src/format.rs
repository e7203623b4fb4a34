//! The key format options shared by `generate` and `inspect`.

use std::collections::BTreeMap;

use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use keypal::format::{FormatVars, Template};
use keypal::{Config, Encoding, Tier};

use crate::error::CliError;

/// Which key format: a full template, or the simple form `PREFIX_{secret:LENGTH:ENCODING}`.
/// With neither, the core default `{secret:32:base62}`.
#[derive(Debug, Clone, Args)]
pub struct FormatArgs {
    /// Key template, like `sk_live_{secret:32:base62}` or
    /// `kota_{tier}_{id:12:base32}_{secret:36:hex}{checksum}`.
    /// Segments: {prefix} {app} {label} {tier} {id:N:ENCODING} {secret:N:ENCODING} {checksum}.
    #[arg(long, short = 't', value_name = "TEMPLATE", conflicts_with_all = ["length", "encoding"])]
    pub template: Option<String>,

    /// Text in front of every key (simple form: `PREFIX_{secret:LENGTH:ENCODING}`), or the
    /// value of {prefix} in a template.
    #[arg(long, value_name = "TEXT")]
    pub prefix: Option<String>,

    /// Secret length in characters, 16 to 256 (simple form) [default: 32].
    #[arg(long, value_name = "N")]
    pub length: Option<usize>,

    /// Secret encoding (simple form) [default: base62].
    #[arg(long, value_name = "ENCODING", value_parser = encoding_parser())]
    pub encoding: Option<Encoding>,

    /// The value of {app} in the template.
    #[arg(long, value_name = "TEXT", requires = "template")]
    pub app: Option<String>,

    /// The value of {label} in the template.
    #[arg(long, value_name = "TEXT", requires = "template")]
    pub label: Option<String>,
}

/// The encoding names the core knows, offered as possible values (and completions).
fn encoding_parser() -> impl TypedValueParser<Value = Encoding> {
    PossibleValuesParser::new(Encoding::ALL.map(Encoding::name)).try_map(|name| name.parse::<Encoding>())
}

impl FormatArgs {
    /// The template these options describe, its `{tier}` segment standing for the tier
    /// texts `tiers` (name and text are the same). Checked the way the core checks a
    /// configuration, with problems named by their option (`--length: ...`).
    pub fn template(&self, tiers: &[String]) -> Result<Template, CliError> {
        let uses = |segment: &str| self.template.as_deref().is_some_and(|t| t.contains(segment));
        for (given, option, segment) in
            [(self.app.is_some(), "--app", "{app}"), (self.label.is_some(), "--label", "{label}")]
        {
            if given && !uses(segment) {
                return Err(CliError::new(format!("{option} is given but the template has no {segment} segment")));
            }
        }
        if self.template.is_some() && self.prefix.is_some() && !uses("{prefix}") {
            return Err(CliError::new(
                "--prefix is given but the template has no {prefix} segment (write the prefix into the template)",
            ));
        }
        if uses("{tier}") && tiers.is_empty() {
            return Err(CliError::new("the template has a {tier} segment: give the tier text with --tier"));
        }

        let config = Config {
            prefix: self.prefix.clone(),
            length: self.length,
            encoding: self.encoding,
            template: self.template.clone(),
            app: self.app.clone(),
            label: self.label.clone(),
            tiers: tiers.iter().map(|t| (t.clone(), Tier::new())).collect::<BTreeMap<_, _>>(),
            default_tier: tiers.first().cloned(),
            ..Config::default()
        };
        if let Err(err) = config.validate() {
            let problems: Vec<String> =
                err.problems().iter().map(|p| format!("{}: {}", option_of(&p.path), p.message)).collect();
            return Err(CliError::new(if problems.is_empty() { err.to_string() } else { problems.join("; ") }));
        }

        let built = match &self.template {
            Some(template) => Template::parse(template, &self.vars(tiers)),
            None => Template::simple(
                self.prefix.as_deref(),
                self.length.unwrap_or(32),
                self.encoding.unwrap_or(Encoding::Base62),
            ),
        };
        built.map_err(|e| CliError::new(format!("--template: {e}")))
    }

    /// The values of the template's `{prefix}`, `{app}`, `{label}` and `{tier}` segments.
    pub fn vars(&self, tiers: &[String]) -> FormatVars {
        FormatVars {
            prefix: self.prefix.clone(),
            app: self.app.clone(),
            label: self.label.clone(),
            tiers: tiers.iter().map(|t| (t.clone(), t.clone())).collect(),
        }
    }
}

/// The option a core configuration field comes from.
fn option_of(path: &str) -> &str {
    match path {
        "template" => "--template",
        "prefix" => "--prefix",
        "length" => "--length",
        "encoding" => "--encoding",
        "app" => "--app",
        "label" => "--label",
        "default_tier" => "--tier",
        tier if tier.starts_with("tiers.") => "--tier",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        format: FormatArgs,
    }

    fn template(args: &[&str], tiers: &[&str]) -> Result<Template, CliError> {
        let probe = Probe::try_parse_from(std::iter::once("probe").chain(args.iter().copied()))
            .map_err(|e| CliError::new(e.to_string()))?;
        let tiers: Vec<String> = tiers.iter().map(|t| (*t).to_owned()).collect();
        probe.format.template(&tiers)
    }

    #[test]
    fn the_default_is_the_core_default() {
        let t = template(&[], &[]).map(|t| t.source().to_owned()).map_err(|e| e.message().to_owned());
        assert_eq!(t.as_deref(), Ok("{secret:32:base62}"));
    }

    #[test]
    fn simple_form_and_templates() {
        let simple = template(&["--prefix", "sk_live", "--length", "40", "--encoding", "hex"], &[]);
        assert_eq!(simple.map(|t| t.source().to_owned()).ok().as_deref(), Some("sk_live_{secret:40:hex}"));
        let full = template(&["--template", "{prefix}_{tier}_{secret:16:hex}", "--prefix", "kp"], &["pro"]);
        assert_eq!(full.map(|t| t.has_tier()).ok(), Some(true));
    }

    #[test]
    fn problems_name_the_option() {
        let message = |args: &[&str], tiers: &[&str]| template(args, tiers).err().map(|e| e.message().to_owned());
        assert!(message(&["--length", "8"], &[]).is_some_and(|m| m.starts_with("--length: ")));
        assert!(message(&["--prefix", "a b"], &[]).is_some_and(|m| m.starts_with("--prefix: ")));
        assert!(message(&["--template", "sk_{secret:8:hex}"], &[]).is_some_and(|m| m.starts_with("--template: ")));
        assert!(message(&["--template", "sk_{tier}_{secret:16:hex}"], &[]).is_some_and(|m| m.contains("--tier")));
        assert!(message(&["--template", "sk_{secret:16:hex}", "--prefix", "x"], &[]).is_some());
        assert!(message(&["--template", "sk_{secret:16:hex}", "--app", "x"], &[]).is_some());
    }
}
