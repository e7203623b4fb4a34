//! `keypal apps list|show|create`: the deployment's applications, read and made on its
//! database directly with the rules of `/v1/apps` (a new application is announced on
//! the deployment's bus, so running servers know it at once).

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use keypal_server::operator::{AppView, NewApp, TierInput};
use serde_json::json;

use crate::deployment::{DeploymentArgs, MASTER_KEY_HELP};
use crate::error::{CliError, CmdResult, Status};
use crate::table::{aligned, print_json, print_lines, refused, rfc3339};

/// Arguments of `keypal apps`.
#[derive(Debug, Args)]
pub struct AppsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AppsCommand,
}

/// The subcommands of `keypal apps`.
#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List the applications, oldest first, with their key counts.
    List(ListArgs),
    /// Show one application's settings.
    Show(ShowArgs),
    /// Make an application and print its client secret alone on stdout (shown once:
    /// SECRET=$(keypal apps create --name Billing --label billing)).
    Create(CreateArgs),
}

/// Arguments of `keypal apps list`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct ListArgs {
    /// Print `GET /v1/apps`'s JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal apps show`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct ShowArgs {
    /// The application's id or label.
    #[arg(value_name = "APP")]
    pub app: String,

    /// Print `GET /v1/apps/{id}`'s JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal apps create`: the settings of `POST /v1/apps`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct CreateArgs {
    /// A human name (1-100 characters).
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// The {label} in keys: [a-z0-9-]{1,32}, unique.
    #[arg(long, value_name = "LABEL")]
    pub label: String,

    /// The key format [default: sk-proj-{app}-{label}-{secret:32:base64url}].
    #[arg(long, value_name = "TEMPLATE")]
    pub template: Option<String>,

    /// An earlier format whose keys keep verifying (repeat for several, at most 8).
    #[arg(long = "legacy-template", value_name = "TEMPLATE")]
    pub legacy_templates: Vec<String>,

    /// sha256 (default), sha512, hmac-sha256, argon2id or bcrypt.
    #[arg(long, value_name = "HASH")]
    pub hash: Option<String>,

    /// bcrypt's cost, 10-15 (with --hash bcrypt) [default: 10].
    #[arg(long, value_name = "N")]
    pub bcrypt_cost: Option<u32>,

    /// A tier, NAME or NAME=RATE_LIMIT (like free=100/hour); repeat for several.
    #[arg(long = "tier", value_name = "NAME[=LIMIT]")]
    pub tiers: Vec<String>,

    /// The tier of keys created without one (needed when the template has {tier}).
    #[arg(long, value_name = "NAME")]
    pub default_tier: Option<String>,

    /// Active keys an owner may hold, 1-100000 [default: 10].
    #[arg(long, value_name = "N")]
    pub max_active_keys_per_owner: Option<u32>,

    /// Keep keys encrypted under the master key so an administrator can reveal them.
    #[arg(long)]
    pub recoverable: bool,

    /// The key.credits_low webhook event fires when a key's credits fall below N.
    #[arg(long, value_name = "N")]
    pub credits_low_threshold: Option<u64>,

    /// Metadata of keys created without any (JSON).
    #[arg(long, value_name = "JSON")]
    pub default_metadata: Option<String>,

    /// Print `POST /v1/apps`'s JSON (the client secret included) instead of the secret alone.
    #[arg(long)]
    pub json: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Runs `keypal apps ...`.
pub fn run(args: &AppsArgs) -> CmdResult {
    match &args.command {
        AppsCommand::List(args) => list(args),
        AppsCommand::Show(args) => show(args),
        AppsCommand::Create(args) => create(args),
    }
}

fn list(args: &ListArgs) -> CmdResult {
    let apps = args.deployment.operate(async |operator| operator.apps().await.map_err(|e| refused(&e)))?;
    if args.json {
        print_json(&json!({ "apps": apps }))?;
    } else {
        print_lines(&table(&apps))?;
    }
    Ok(Status::Success)
}

fn show(args: &ShowArgs) -> CmdResult {
    let app = args.deployment.operate(async |operator| operator.app(&args.app).await.map_err(|e| refused(&e)))?;
    if args.json {
        print_json(&json!({ "app": app }))?;
    } else {
        print_lines(&details(&app))?;
    }
    Ok(Status::Success)
}

fn create(args: &CreateArgs) -> CmdResult {
    let request = new_app(args)?;
    let created =
        args.deployment.operate(async |operator| operator.create_app(request).await.map_err(|e| refused(&e)))?;
    if args.json {
        print_json(&created)?;
    } else {
        print_lines(std::slice::from_ref(&created.client_secret))?;
    }
    eprintln!(
        "keypal: created application {} (id {}); its client secret is shown only once",
        created.app.label, created.app.id
    );
    Ok(Status::Success)
}

/// The request `POST /v1/apps` would take for these options.
fn new_app(args: &CreateArgs) -> Result<NewApp, CliError> {
    let default_metadata = args
        .default_metadata
        .as_deref()
        .map(|text| serde_json::from_str(text).map_err(|e| CliError::caused("--default-metadata is not JSON", &e)))
        .transpose()?;
    let mut tiers = BTreeMap::new();
    for tier in &args.tiers {
        let (name, rate_limit) = match tier.split_once('=') {
            Some((name, limit)) => (name, Some(limit.to_owned())),
            None => (tier.as_str(), None),
        };
        if tiers.insert(name.to_owned(), TierInput { segment: None, rate_limit, refill: None }).is_some() {
            return Err(CliError::new(format!("--tier: {name} is given twice")));
        }
    }
    Ok(NewApp {
        name: args.name.clone(),
        label: args.label.clone(),
        default_metadata,
        template: args.template.clone(),
        legacy_templates: (!args.legacy_templates.is_empty()).then(|| args.legacy_templates.clone()),
        hash: args.hash.clone(),
        bcrypt_cost: args.bcrypt_cost,
        tiers: (!tiers.is_empty()).then_some(tiers),
        default_tier: args.default_tier.clone(),
        max_active_keys_per_owner: args.max_active_keys_per_owner,
        recoverable: Some(args.recoverable),
        credits_low_threshold: args.credits_low_threshold,
    })
}

/// The applications as a table: a header line, then one line per application.
fn table(apps: &[AppView]) -> Vec<String> {
    let mut rows = vec![["ID", "LABEL", "NAME", "HASH", "ACTIVE KEYS", "TOTAL KEYS", "CREATED"].map(str::to_owned)];
    for app in apps {
        rows.push([
            app.id.to_string(),
            app.label.clone(),
            app.name.clone(),
            app.hash.to_owned(),
            app.active_keys.to_string(),
            app.total_keys.to_string(),
            rfc3339(app.created_at),
        ]);
    }
    aligned(&rows)
}

/// One application's settings, a line each.
fn details(app: &AppView) -> Vec<String> {
    let optional = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    let tiers: Vec<String> = app
        .tiers
        .iter()
        .map(|(name, tier)| match &tier.rate_limit {
            Some(limit) => format!("{name}={limit}"),
            None => name.clone(),
        })
        .collect();
    let rows = [
        ["id".to_owned(), app.id.to_string()],
        ["label".to_owned(), app.label.clone()],
        ["name".to_owned(), app.name.clone()],
        ["public id".to_owned(), app.public_id.clone()],
        ["template".to_owned(), app.template.clone()],
        [
            "legacy templates".to_owned(),
            optional((!app.legacy_templates.is_empty()).then(|| app.legacy_templates.join(" "))),
        ],
        ["hash".to_owned(), app.hash.to_owned()],
        ["bcrypt cost".to_owned(), optional(app.bcrypt_cost.map(|c| c.to_string()))],
        ["tiers".to_owned(), optional((!tiers.is_empty()).then(|| tiers.join(" ")))],
        ["default tier".to_owned(), optional(app.default_tier.clone())],
        ["default metadata".to_owned(), optional(app.default_metadata.as_ref().map(ToString::to_string))],
        ["max active keys per owner".to_owned(), app.max_active_keys_per_owner.to_string()],
        ["recoverable".to_owned(), app.recoverable.to_string()],
        ["active keys".to_owned(), app.active_keys.to_string()],
        ["total keys".to_owned(), app.total_keys.to_string()],
        ["created".to_owned(), rfc3339(app.created_at)],
    ];
    aligned(&rows)
}
