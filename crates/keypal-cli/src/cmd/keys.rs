//! `keypal keys list|show|create|update|revoke|rotate` (and `import|export`, in
//! [`key_files`](super::key_files)): an application's keys, read and
//! changed on the deployment's database directly with the rules of `/v1/apps/{id}/keys`
//! and `/v1/keys/{id}`. Changes are announced on the deployment's bus (PostgreSQL
//! `NOTIFY`, or Redis with `--redis-url`), so running servers refuse a revoked key at once.

use clap::{ArgGroup, Args, Subcommand};
use keypal_server::operator::{
    CreatedKey, CreditOpName, CreditsRequest, KeyPatchRequest, KeyView, NewKeyRequest, RefillView, RotateRequest,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::key_files::{self, ExportKeysArgs, ImportKeysArgs};
use crate::deployment::{DeploymentArgs, MASTER_KEY_HELP};
use crate::error::{CliError, CmdResult, Status};
use crate::table::{aligned, print_json, print_lines, refused, rfc3339};

/// Arguments of `keypal keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The subcommands of `keypal keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List an application's keys, newest first (never the keys themselves).
    List(ListArgs),
    /// Show one key's record.
    Show(ShowArgs),
    /// Make a key and print it alone on stdout (shown once: KEY=$(keypal keys create --app billing)).
    Create(CreateArgs),
    /// Change a key's name, metadata, scopes, enabled flag, expiry, tier, credits or refill.
    Update(UpdateArgs),
    /// Set, increment or decrement a key's credits in one step (audited).
    Credits(CreditsArgs),
    /// Revoke a key: running servers refuse it at once.
    Revoke(RevokeArgs),
    /// Replace a key with a new one, printed alone on stdout (shown once).
    Rotate(RotateArgs),
    /// Import keys issued elsewhere from NDJSON or CSV (a file or stdin), a bad line
    /// reported by its number while the others go in.
    Import(ImportKeysArgs),
    /// Write the application's active keys as NDJSON import items (their hashes, never
    /// a key), for `keypal keys import` into another application or deployment.
    Export(ExportKeysArgs),
}

/// Arguments of `keypal keys list`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct ListArgs {
    /// The application's id or label.
    #[arg(long, value_name = "APP")]
    pub app: String,

    /// Only this owner's keys.
    #[arg(long, value_name = "OWNER")]
    pub owner: Option<String>,

    /// Include revoked keys.
    #[arg(long)]
    pub include_revoked: bool,

    /// Print JSON (`{"keys": [...]}`, as `GET /v1/apps/{id}/keys`) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal keys show`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct ShowArgs {
    /// The key's id.
    #[arg(value_name = "ID")]
    pub id: uuid::Uuid,

    /// Print `GET /v1/keys/{id}`'s JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal keys create`: the fields of `POST /v1/apps/{id}/keys`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct CreateArgs {
    /// The application's id or label.
    #[arg(long, value_name = "APP")]
    pub app: String,

    /// Who owns it (1-256 characters).
    #[arg(long, value_name = "OWNER")]
    pub owner: Option<String>,

    /// A human name (1-100 characters).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Granted scopes, comma-separated (like read,write).
    #[arg(long, value_name = "SCOPES", value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,

    /// A tier of the application [default: its default tier].
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,

    /// Expire after N days, 1 to 3650 [default: never].
    #[arg(long, value_name = "N")]
    pub expires_in_days: Option<u32>,

    /// Usage credits [default: unlimited].
    #[arg(long, value_name = "N")]
    pub remaining: Option<u64>,

    /// A rate limit overriding the tier's, like 100/hour.
    #[arg(long, value_name = "LIMIT")]
    pub rate_limit: Option<String>,

    /// Credits that refill, AMOUNT/INTERVAL: 1000/monthly, 1000/monthly:15 (day 15),
    /// 100/daily, 500/weekly or a duration like 50/12h [default: the tier's refill].
    #[arg(long, value_name = "REFILL")]
    pub refill: Option<String>,

    /// Metadata (JSON) [default: the application's default metadata].
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,

    /// Print `POST /v1/apps/{id}/keys`'s JSON (the key included) instead of the key alone.
    #[arg(long)]
    pub json: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal keys update`: the fields of `PATCH /v1/keys/{id}`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
#[command(group = ArgGroup::new("enabled").args(["enable", "disable"]))]
#[command(group = ArgGroup::new("expiry").args(["expires_at", "never_expires"]))]
#[command(group = ArgGroup::new("credits").args(["remaining", "unlimited"]))]
#[command(group = ArgGroup::new("refills").args(["refill", "no_refill"]))]
pub struct UpdateArgs {
    /// The key's id.
    #[arg(value_name = "ID")]
    pub id: uuid::Uuid,

    /// A new name (1-100 characters).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// New scopes, comma-separated (replacing the old ones).
    #[arg(long, value_name = "SCOPES", value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,

    /// New metadata (JSON; `null` clears it).
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,

    /// A new tier of the application.
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,

    /// Enable the key.
    #[arg(long)]
    pub enable: bool,

    /// Disable the key: refused until enabled.
    #[arg(long)]
    pub disable: bool,

    /// A new expiry (RFC 3339, like 2027-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,

    /// Never expire.
    #[arg(long)]
    pub never_expires: bool,

    /// New usage credits.
    #[arg(long, value_name = "N")]
    pub remaining: Option<u64>,

    /// Unlimited credits.
    #[arg(long)]
    pub unlimited: bool,

    /// Credits that refill, AMOUNT/INTERVAL (like 1000/monthly or 50/12h): starts a
    /// period now, with AMOUNT credits unless --remaining is given too.
    #[arg(long, value_name = "REFILL")]
    pub refill: Option<String>,

    /// Remove the refill (the credits left stay).
    #[arg(long)]
    pub no_refill: bool,

    /// Print `PATCH /v1/keys/{id}`'s JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal keys credits`: the body of `POST /v1/keys/{id}/credits`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
#[command(group = ArgGroup::new("op").args(["set", "increment", "decrement"]).required(true))]
pub struct CreditsArgs {
    /// The key's id.
    #[arg(value_name = "ID")]
    pub id: uuid::Uuid,

    /// Set the credits to N.
    #[arg(long, value_name = "N")]
    pub set: Option<u64>,

    /// Add N credits.
    #[arg(long, value_name = "N")]
    pub increment: Option<u64>,

    /// Take N credits away (down to zero at most).
    #[arg(long, value_name = "N")]
    pub decrement: Option<u64>,

    /// Print `POST /v1/keys/{id}/credits`'s JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal keys revoke`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct RevokeArgs {
    /// The key's id.
    #[arg(value_name = "ID")]
    pub id: uuid::Uuid,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal keys rotate`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct RotateArgs {
    /// The key's id.
    #[arg(value_name = "ID")]
    pub id: uuid::Uuid,

    /// Seconds the old key keeps working, at most 2592000 (30 days) [default: 0].
    #[arg(long, value_name = "N")]
    pub grace_seconds: Option<u64>,

    /// Print `POST /v1/keys/{id}/rotate`'s JSON (the new key included) instead of the key alone.
    #[arg(long)]
    pub json: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Runs `keypal keys ...`.
pub fn run(args: &KeysArgs) -> CmdResult {
    match &args.command {
        KeysCommand::List(args) => list(args),
        KeysCommand::Show(args) => show(args),
        KeysCommand::Create(args) => create(args),
        KeysCommand::Update(args) => update(args),
        KeysCommand::Credits(args) => credits(args),
        KeysCommand::Revoke(args) => revoke(args),
        KeysCommand::Rotate(args) => rotate(args),
        KeysCommand::Import(args) => key_files::import(args),
        KeysCommand::Export(args) => key_files::export(args),
    }
}

fn list(args: &ListArgs) -> CmdResult {
    let keys = args.deployment.operate(async |operator| {
        operator.keys(&args.app, args.owner.clone(), args.include_revoked).await.map_err(|e| refused(&e))
    })?;
    if args.json {
        print_json(&json!({ "keys": keys }))?;
    } else {
        print_lines(&table(&keys, OffsetDateTime::now_utc()))?;
    }
    Ok(Status::Success)
}

fn show(args: &ShowArgs) -> CmdResult {
    let key = args.deployment.operate(async |operator| operator.key(args.id).await.map_err(|e| refused(&e)))?;
    print_key(&key, args.json)
}

fn create(args: &CreateArgs) -> CmdResult {
    let request = NewKeyRequest {
        name: args.name.clone(),
        owner_id: args.owner.clone(),
        metadata: args.metadata.as_deref().map(|text| json_option("--metadata", text)).transpose()?,
        scopes: args.scopes.clone(),
        tier: args.tier.clone(),
        expires_in_days: args.expires_in_days,
        expires_at: None,
        remaining: args.remaining,
        rate_limit: args.rate_limit.clone(),
        refill: args.refill.as_deref().map(refill).transpose()?,
    };
    let created = args
        .deployment
        .operate(async |operator| operator.create_key(&args.app, request).await.map_err(|e| refused(&e)))?;
    print_created(&created, args.json)?;
    eprintln!("keypal: created key {} in application {}; it is shown only once", created.record.id, args.app);
    Ok(Status::Success)
}

fn update(args: &UpdateArgs) -> CmdResult {
    let expires_at = match (&args.expires_at, args.never_expires) {
        (Some(text), _) => Some(Some(
            OffsetDateTime::parse(text, &Rfc3339).map_err(|e| CliError::caused("--expires-at is not RFC 3339", &e))?,
        )),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let request = KeyPatchRequest {
        name: args.name.clone().map(Some),
        metadata: args.metadata.as_deref().map(|text| json_option("--metadata", text)).transpose()?.map(|v| match v {
            Value::Null => None,
            other => Some(other),
        }),
        scopes: args.scopes.clone(),
        enabled: match (args.enable, args.disable) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        expires_at,
        tier: args.tier.clone().map(Some),
        remaining: match (args.remaining, args.unlimited) {
            (Some(n), _) => Some(Some(n)),
            (None, true) => Some(None),
            (None, false) => None,
        },
        refill: match (&args.refill, args.no_refill) {
            (Some(text), _) => Some(Some(refill(text)?)),
            (None, true) => Some(None),
            (None, false) => None,
        },
    };
    let key = args
        .deployment
        .operate(async |operator| operator.update_key(args.id, request).await.map_err(|e| refused(&e)))?;
    eprintln!("keypal: updated key {}", key.id);
    print_key(&key, args.json)
}

fn revoke(args: &RevokeArgs) -> CmdResult {
    let key = args.deployment.operate(async |operator| operator.revoke_key(args.id).await.map_err(|e| refused(&e)))?;
    eprintln!("keypal: revoked key {}", key.id);
    Ok(Status::Success)
}

fn rotate(args: &RotateArgs) -> CmdResult {
    let request = RotateRequest { grace_seconds: args.grace_seconds };
    let created = args
        .deployment
        .operate(async |operator| operator.rotate_key(args.id, request).await.map_err(|e| refused(&e)))?;
    print_created(&created, args.json)?;
    eprintln!("keypal: key {} replaces {}; the new key is shown only once", created.record.id, args.id);
    Ok(Status::Success)
}

fn credits(args: &CreditsArgs) -> CmdResult {
    let (op, amount) = match (args.set, args.increment, args.decrement) {
        (Some(n), _, _) => (CreditOpName::Set, n),
        (None, Some(n), _) => (CreditOpName::Increment, n),
        (None, None, Some(n)) => (CreditOpName::Decrement, n),
        (None, None, None) => return Err(CliError::new("give --set, --increment or --decrement")),
    };
    let request = CreditsRequest { op, amount };
    let key = args
        .deployment
        .operate(async |operator| operator.change_key_credits(args.id, request).await.map_err(|e| refused(&e)))?;
    eprintln!("keypal: changed the credits of key {}", key.id);
    print_key(&key, args.json)
}

/// A `--refill` value, AMOUNT/INTERVAL: `1000/monthly`, `1000/monthly:15`, `50/12h`.
fn refill(text: &str) -> Result<RefillView, CliError> {
    let refill: keypal::Refill = text
        .parse()
        .map_err(|e| CliError::new(format!("--refill {text:?}: {e}; write AMOUNT/INTERVAL, like 1000/monthly")))?;
    Ok(RefillView::from(&refill))
}

/// A refill as `--refill` takes it: `1000/monthly:15`.
fn refill_text(refill: &RefillView) -> String {
    refill.parse("refill").map_or_else(|_| format!("{}/{}", refill.amount, refill.interval), |r| r.to_string())
}

/// A JSON option's value.
fn json_option(option: &str, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::caused(format!("{option} is not JSON"), &e))
}

/// A new key: alone on stdout, or the JSON of its response with `--json`.
fn print_created(created: &CreatedKey, json: bool) -> Result<(), CliError> {
    if json { print_json(created) } else { print_lines(std::slice::from_ref(&created.key)) }
}

fn print_key(key: &KeyView, json: bool) -> CmdResult {
    if json {
        print_json(key)?;
    } else {
        print_lines(&details(key, OffsetDateTime::now_utc()))?;
    }
    Ok(Status::Success)
}

/// What a key is now: `revoked`, `expired`, `disabled` or `active`.
fn status(key: &KeyView, now: OffsetDateTime) -> &'static str {
    if key.revoked_at.is_some_and(|at| at <= now) {
        "revoked"
    } else if key.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else if !key.enabled {
        "disabled"
    } else {
        "active"
    }
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// The keys as a table: a header line, then one line per key.
fn table(keys: &[KeyView], now: OffsetDateTime) -> Vec<String> {
    let mut rows =
        vec![["ID", "NAME", "OWNER", "KEY", "TIER", "SCOPES", "STATUS", "EXPIRES", "LAST USED"].map(str::to_owned)];
    for key in keys {
        rows.push([
            key.id.to_string(),
            or_dash(key.name.clone()),
            or_dash(key.owner_id.clone()),
            key.masked.clone(),
            or_dash(key.tier.clone()),
            or_dash((!key.scopes.is_empty()).then(|| key.scopes.join(","))),
            status(key, now).to_owned(),
            key.expires_at.map_or_else(|| "never".to_owned(), rfc3339),
            key.last_used_at.map_or_else(|| "never".to_owned(), rfc3339),
        ]);
    }
    aligned(&rows)
}

/// One key's record, a line each.
fn details(key: &KeyView, now: OffsetDateTime) -> Vec<String> {
    let rows = [
        ["id".to_owned(), key.id.to_string()],
        ["application".to_owned(), or_dash(key.app_id.clone())],
        ["name".to_owned(), or_dash(key.name.clone())],
        ["owner".to_owned(), or_dash(key.owner_id.clone())],
        ["key".to_owned(), key.masked.clone()],
        ["status".to_owned(), status(key, now).to_owned()],
        ["tier".to_owned(), or_dash(key.tier.clone())],
        ["scopes".to_owned(), or_dash((!key.scopes.is_empty()).then(|| key.scopes.join(",")))],
        ["metadata".to_owned(), or_dash(key.metadata.as_ref().map(ToString::to_string))],
        ["remaining".to_owned(), key.remaining.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())],
        ["refill".to_owned(), key.refill.as_ref().map_or_else(|| "-".to_owned(), refill_text)],
        ["refill at".to_owned(), key.refill_at.map_or_else(|| "-".to_owned(), rfc3339)],
        ["rate limit".to_owned(), or_dash(key.rate_limit.clone())],
        ["created".to_owned(), rfc3339(key.created_at)],
        ["expires".to_owned(), key.expires_at.map_or_else(|| "never".to_owned(), rfc3339)],
        ["last used".to_owned(), key.last_used_at.map_or_else(|| "never".to_owned(), rfc3339)],
        ["revoked".to_owned(), or_dash(key.revoked_at.map(rfc3339))],
        ["rotated from".to_owned(), or_dash(key.rotated_from.map(|id| id.to_string()))],
    ];
    aligned(&rows)
}
