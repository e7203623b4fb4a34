//! `keypal tokens create|list|revoke`: the management tokens scripts send to the
//! management API, made and revoked on the deployment's database directly (the same
//! rules as `POST /v1/tokens`; running servers read tokens from the database on every
//! request, so a revocation holds on all of them at once).

use clap::{Args, Subcommand};
use keypal_server::tokens::{NewToken, TokenError, TokenList, TokenView, Tokens};
use time::OffsetDateTime;

use crate::deployment::{DeploymentArgs, MASTER_KEY_HELP};
use crate::error::{CliError, CmdResult, Status};
use crate::io::Out;
use crate::table::{aligned, rfc3339};

/// Arguments of `keypal tokens`.
#[derive(Debug, Args)]
pub struct TokensArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TokensCommand,
}

/// The subcommands of `keypal tokens`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token and print it alone on stdout (shown once: TOKEN=$(keypal tokens create --name ci)).
    Create(CreateArgs),
    /// List the tokens that are not revoked (never the tokens themselves).
    List(ListArgs),
    /// Revoke a token: every running server refuses it at once.
    Revoke(RevokeArgs),
}

/// Arguments of `keypal tokens create`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct CreateArgs {
    /// What the token is for (1-64 of A-Z, a-z, 0-9, '.', '_', '-'; unique among tokens
    /// not revoked); the audit log names its changes token:NAME.
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// Expire after N days, 1 to 3650 [default: never].
    #[arg(long, value_name = "N")]
    pub expires_in_days: Option<u32>,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal tokens list`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct ListArgs {
    /// Print `GET /v1/tokens`'s JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal tokens revoke`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct RevokeArgs {
    /// The token's id (from `keypal tokens list`).
    #[arg(value_name = "ID")]
    pub id: uuid::Uuid,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Runs `keypal tokens ...`.
pub fn run(args: &TokensArgs) -> CmdResult {
    match &args.command {
        TokensCommand::Create(args) => create(args),
        TokensCommand::List(args) => list(args),
        TokensCommand::Revoke(args) => revoke(args),
    }
}

/// A refusal of the token rules, with its stable code.
fn refused(error: &TokenError) -> CliError {
    CliError::new(format!("[{}] {error}", error.code()))
}

fn create(args: &CreateArgs) -> CmdResult {
    let request = NewToken { name: args.name.clone(), expires_in_days: args.expires_in_days };
    let created = args.deployment.run(async |deployment| {
        Tokens::new(&deployment.store, &deployment.secrets)
            .create(&request, keypal_server::operator::Operator::context())
            .await
            .map_err(|e| refused(&e))
    })?;
    let mut out = Out::new();
    out.line(&created.token)?;
    out.finish()?;
    let expires =
        created.record.expires_at.map_or_else(|| "never expires".to_owned(), |at| format!("expires {}", rfc3339(at)));
    eprintln!(
        "keypal: created management token {} (id {}, {expires}); it is shown only once",
        created.record.name, created.record.id
    );
    Ok(Status::Success)
}

fn list(args: &ListArgs) -> CmdResult {
    let tokens = args.deployment.run(async |deployment| {
        Tokens::new(&deployment.store, &deployment.secrets).list().await.map_err(|e| refused(&e))
    })?;
    let mut out = Out::new();
    if args.json {
        let text = serde_json::to_string_pretty(&TokenList { tokens })
            .map_err(|e| CliError::caused("cannot write the JSON", &e))?;
        out.line(&text)?;
    } else {
        for line in table(&tokens, OffsetDateTime::now_utc()) {
            out.line(&line)?;
        }
    }
    out.finish()?;
    Ok(Status::Success)
}

fn revoke(args: &RevokeArgs) -> CmdResult {
    let token = args.deployment.run(async |deployment| {
        Tokens::new(&deployment.store, &deployment.secrets)
            .revoke(args.id, keypal_server::operator::Operator::context())
            .await
            .map_err(|e| refused(&e))
    })?;
    eprintln!("keypal: revoked management token {} (id {})", token.name, token.id);
    Ok(Status::Success)
}

/// The tokens as a table: a header line, then one line per token, columns aligned.
fn table(tokens: &[TokenView], now: OffsetDateTime) -> Vec<String> {
    let mut rows = vec![["ID", "NAME", "CREATED", "EXPIRES", "LAST USED"].map(str::to_owned)];
    for token in tokens {
        let expires = match token.expires_at {
            None => "never".to_owned(),
            Some(at) if token.is_expired_at(now) => format!("{} (expired)", rfc3339(at)),
            Some(at) => rfc3339(at),
        };
        let last_used = token.last_used_at.map_or_else(|| "never".to_owned(), rfc3339);
        rows.push([token.id.to_string(), token.name.clone(), rfc3339(token.created_at), expires, last_used]);
    }
    aligned(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_table_aligns_its_columns_and_marks_expired_tokens() {
        let now = datetime!(2026-01-10 12:00 UTC);
        let token = |name: &str, expires_at| TokenView {
            id: uuid::Uuid::nil(),
            name: name.to_owned(),
            created_at: datetime!(2026-01-01 0:00 UTC),
            expires_at,
            last_used_at: None,
        };
        let lines = table(&[token("ci", None), token("deploy-bot", Some(datetime!(2026-01-05 0:00 UTC)))], now);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  "), "{lines:?}");
        let name_column = lines[0].find("NAME").unwrap();
        assert_eq!(lines[1].find("ci"), Some(name_column), "{lines:?}");
        assert_eq!(lines[2].find("deploy-bot"), Some(name_column), "{lines:?}");
        assert!(lines[1].contains("never"), "{lines:?}");
        assert!(lines[2].contains("2026-01-05T00:00:00Z (expired)"), "{lines:?}");
    }
}
