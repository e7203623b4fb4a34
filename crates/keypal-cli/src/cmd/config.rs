//! `keypal config`: the JSON schema of keypal.toml, and checking a keypal.toml.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use keypal::{Config, ConfigError, ConfigProblem, Error, KeyManager, MemoryStore};

use crate::error::{CliError, CmdResult, Status};
use crate::io::Out;

/// Arguments of `keypal config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// The `keypal config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the JSON Schema of keypal.toml (the core configuration).
    Schema,
    /// Check a keypal.toml (or .json) file: print every problem with its field path.
    #[command(after_help = "Prints `PATH: problem` lines and exits 1 when the file has problems.")]
    Check {
        /// The file; `-` reads TOML from stdin. A name ending in `.json` is read as JSON.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Runs `keypal config`.
pub fn run(args: &ConfigArgs) -> CmdResult {
    match &args.command {
        ConfigCommand::Schema => schema(),
        ConfigCommand::Check { file } => check(file),
    }
}

/// Prints the schema exactly as committed in `schema/keypal.schema.json`.
fn schema() -> CmdResult {
    let text = serde_json::to_string_pretty(&Config::json_schema())
        .map_err(|e| CliError::caused("cannot write the schema", &e))?;
    let mut out = Out::new();
    out.line(&text)?;
    out.finish()?;
    Ok(Status::Success)
}

fn check(file: &Path) -> CmdResult {
    let name = if file == Path::new("-") { "stdin".to_owned() } else { file.display().to_string() };
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| CliError::caused("cannot read stdin", &e))?;
        text
    } else {
        std::fs::read_to_string(file).map_err(|e| CliError::caused(format!("cannot read {name}"), &e))?
    };
    let json = file.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    let parsed = if json { Config::from_json(&text) } else { Config::from_toml(&text) };

    let problems = match parsed {
        Err(ConfigError::Syntax(message)) => vec![syntax_problem(&message, &text)],
        Err(err) => err.problems().to_vec(),
        // Building a manager runs every check, including those that need a sample key.
        Ok(config) => match KeyManager::from_config(config, MemoryStore::new()) {
            Ok(_) => Vec::new(),
            Err(Error::Config(err)) => err.problems().to_vec(),
            Err(err) => vec![ConfigProblem { path: "(config)".into(), message: err.to_string() }],
        },
    };
    let mut out = Out::new();
    if problems.is_empty() {
        out.line(&format!("{name}: ok"))?;
        out.finish()?;
        return Ok(Status::Success);
    }
    for problem in &problems {
        out.line(&problem.to_string())?;
    }
    out.finish()?;
    Err(CliError::rejected(format!("{name} has {} problem(s)", problems.len())))
}

/// A syntax error as a problem. The parser quotes the offending line; that quote is
/// left out, and so is the whole message when the line may hold a pepper, so that no
/// secret is printed.
fn syntax_problem(message: &str, text: &str) -> ConfigProblem {
    let mut lines = message.lines();
    let head = lines.next().unwrap_or_default();
    let location = head.split_once(" at line ").map(|(_, at)| format!("line {at}"));
    let line_number = location
        .as_deref()
        .and_then(|at| at.strip_prefix("line "))
        .and_then(|at| at.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok());
    // What follows the quoted line (`  |`, `2 | ...`, `  |   ^^^`) is the parser's message.
    let detail: Vec<&str> = lines.filter(|line| !is_quote(line)).map(str::trim).filter(|l| !l.is_empty()).collect();
    let detail = if detail.is_empty() { head.to_owned() } else { detail.join(" ") };
    let path = location.unwrap_or_else(|| "(syntax)".to_owned());
    let message = match line_number {
        Some(n) if may_hold_pepper(text, n) => {
            "invalid value (details hidden: this line may hold a secret pepper)".to_owned()
        }
        _ => detail,
    };
    ConfigProblem { path, message }
}

/// A line of the parser's quote of the source: `  |`, `2 | text`, `  |   ^^^`.
fn is_quote(line: &str) -> bool {
    line.trim_start().trim_start_matches(|c: char| c.is_ascii_digit()).trim_start().starts_with('|')
}

/// Whether line `number` (from 1) of `text` is a pepper: in a `[hash.peppers]` table,
/// or mentioning peppers itself (an inline table).
fn may_hold_pepper(text: &str, number: usize) -> bool {
    let mut table = "";
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            table = trimmed;
        }
        if i + 1 == number {
            return table.contains("pepper") || trimmed.contains("pepper");
        }
    }
    // The error is past the last line (an unclosed string or table): judge by the last table.
    table.contains("pepper")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> ConfigProblem {
        match Config::from_toml(text) {
            Err(ConfigError::Syntax(message)) => syntax_problem(&message, text),
            other => ConfigProblem { path: "unexpected".into(), message: format!("{other:?}") },
        }
    }

    #[test]
    fn syntax_errors_keep_location_and_message_but_not_the_quoted_line() {
        let p = problem("[cache]\nttl = \"soon\"");
        assert!(p.path.starts_with("line 2"), "{p}");
        assert!(p.message.contains("is not a duration"), "{p}");
        assert!(!p.message.contains("ttl ="), "{p}");
    }

    #[test]
    fn pepper_lines_are_never_echoed() {
        for text in [
            "[hash.peppers]\nk1 = \"a-secret-pepper-value",
            "[hash]\npeppers = \"a-secret-pepper-value\"",
            "[hash]\npeppers = { k1 = 5, k2 = \"a-secret-pepper-value\" }",
        ] {
            let p = problem(text);
            assert!(!p.to_string().contains("a-secret-pepper-value"), "{p}");
            assert!(p.message.contains("hidden"), "{p}");
        }
    }
}
