//! `keypal export` and `keypal import FILE`: a deployment's applications, keys and
//! (optionally) audit log as NDJSON, and restoring such a file into any store: the
//! way to move a deployment from SQLite to PostgreSQL.
//!
//! The file is one JSON object per line, each with a `type`:
//!
//! - `header` first: `{"type":"header","format":"keypal-export","version":1,"audit":BOOL,"exported_at":TIME}`;
//! - `object`: a document of `keypal_objects` (`kind`, `id`, `lookup`, `body`): the
//!   settings (service key digest and sealed copy, admin password hash, master key
//!   check), the applications and their label claims (an application's lookup is its
//!   client secret's keyed digest), and the management tokens (their digests). Never
//!   the administrator's sessions;
//! - `key`: a key's record, every field: stored hash, lookup, sealed copy of a
//!   recoverable key, version and times. Never a plaintext key: keypal has none;
//! - `audit` (with `--audit`): an event of the audit log, as it was.
//!
//! Sealed copies, HMAC peppers and client secret digests derive from the master key,
//! so the deployment restored into must use the same master key.
//!
//! Restoring inserts what is absent and skips what is present (same kind and id,
//! same key id, same event id), so running an import again changes nothing. Keys keep
//! their ids and times and are inserted without the per-owner limit; each one
//! inserted adds an `imported` event (actor `cli`, the operator) to the audit log,
//! after any audit lines restored from the file. Applications restored into a
//! running deployment are seen by its servers at their next start.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use clap::Args;
use keypal::{Action, AuditQuery, Event, KeyRecord, ListQuery, Store, StoreError};
use keypal_server::Deployment;
use keypal_server::operator::Operator;
use keypal_sql::NewObject;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::deployment::{DeploymentArgs, MASTER_KEY_HELP};
use crate::error::{CliError, CmdResult, Status};
use crate::io::Out;

/// What the header's `format` says.
const FORMAT: &str = "keypal-export";
/// The version of the format this build writes and reads.
const VERSION: u32 = 1;
/// The kinds of documents exported: everything but the administrator's sessions.
/// (The kinds of `keypal_objects`: settings, applications and their label claims,
/// management tokens and their name claims, webhooks with their sealed secrets; not
/// their deliveries.)
const EXPORTED_KINDS: [&str; 6] =
    ["setting", "app", "app_label", keypal_server::tokens::KIND, "mgmt_token_name", keypal_sql::WEBHOOK_KIND];
/// Records and events read per query.
const PAGE: u32 = 1000;

/// Arguments of `keypal export`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct ExportArgs {
    /// Include the audit log.
    #[arg(long)]
    pub audit: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal import`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct ImportArgs {
    /// The file `keypal export` wrote (`-`: standard input).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The deployment to restore into.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Line {
    /// The first line.
    Header {
        /// Always [`FORMAT`].
        format: String,
        /// The format's version.
        version: u32,
        /// Whether the audit log is included.
        audit: bool,
        /// When the export was made.
        #[serde(with = "time::serde::rfc3339")]
        exported_at: OffsetDateTime,
    },
    /// A document.
    Object {
        /// Its kind.
        kind: String,
        /// Its id within the kind.
        id: String,
        /// Its unique lookup value.
        lookup: Option<String>,
        /// The document.
        body: Value,
    },
    /// A key's record.
    Key {
        /// Every field of it.
        record: Box<KeyRecord>,
    },
    /// An audit event.
    Audit {
        /// The event.
        event: Box<Event>,
    },
}

/// Runs `keypal export`.
pub fn export(args: &ExportArgs) -> CmdResult {
    args.deployment.run(async |deployment| write_export(deployment, args.audit).await)?;
    Ok(Status::Success)
}

async fn write_export(deployment: &Deployment, audit: bool) -> Result<(), CliError> {
    let store = &deployment.store;
    let mut out = Out::new();
    let header =
        Line::Header { format: FORMAT.to_owned(), version: VERSION, audit, exported_at: OffsetDateTime::now_utc() };
    write_line(&mut out, &header)?;
    let (mut objects, mut keys, mut events) = (0u64, 0u64, 0u64);
    for kind in EXPORTED_KINDS {
        for object in store.list_objects(kind).await.map_err(read_error)? {
            let line = Line::Object { kind: object.kind, id: object.id, lookup: object.lookup, body: object.body };
            write_line(&mut out, &line)?;
            objects += 1;
        }
    }
    let mut query = ListQuery::new().any_namespace().include_revoked(true).limit(PAGE);
    loop {
        let page = store.list(&query).await.map_err(read_error)?;
        for record in page.items {
            write_line(&mut out, &Line::Key { record: Box::new(KeyRecord::clone(&record)) })?;
            keys += 1;
        }
        match page.next_cursor {
            Some(cursor) => query = query.cursor(cursor),
            None => break,
        }
    }
    if audit {
        let mut query = AuditQuery::default();
        query.limit = PAGE;
        loop {
            let page = store.audit(&query).await.map_err(read_error)?;
            for event in page.items {
                write_line(&mut out, &Line::Audit { event: Box::new(event) })?;
                events += 1;
            }
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
    }
    out.finish()?;
    let audit_note = if audit { format!(", {events} audit events") } else { String::new() };
    eprintln!("keypal: exported {objects} documents, {keys} keys{audit_note}");
    Ok(())
}

fn write_line(out: &mut Out, line: &Line) -> Result<(), CliError> {
    let text = serde_json::to_string(line).map_err(|e| CliError::caused("cannot write the JSON", &e))?;
    out.line(&text)
}

fn read_error(error: StoreError) -> CliError {
    CliError::caused("cannot read the deployment", &error)
}

/// What an import did with each kind of line.
#[derive(Debug, Default)]
struct Tally {
    /// Inserted.
    imported: u64,
    /// Already present, left alone.
    present: u64,
}

impl Tally {
    fn note(&mut self, inserted: bool) {
        if inserted {
            self.imported += 1;
        } else {
            self.present += 1;
        }
    }
}

/// The counts of an import.
#[derive(Debug, Default)]
struct Counts {
    objects: Tally,
    keys: Tally,
    events: Tally,
    failed: u64,
}

/// Runs `keypal import FILE`.
pub fn import(args: &ImportArgs) -> CmdResult {
    let input: Box<dyn Read> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            File::open(&args.file).map_err(|e| CliError::caused(format!("cannot read {}", args.file.display()), &e))?;
        Box::new(file)
    };
    let counts = args.deployment.run(async |deployment| restore(deployment, BufReader::new(input)).await)?;
    let Counts { objects, keys, events, failed } = counts;
    eprintln!(
        "keypal: imported {} documents ({} already present), {} keys ({} already present), \
         {} audit events ({} already present); {failed} lines failed",
        objects.imported, objects.present, keys.imported, keys.present, events.imported, events.present
    );
    Ok(if failed == 0 { Status::Success } else { Status::Rejected })
}

async fn restore(deployment: &Deployment, input: impl BufRead) -> Result<Counts, CliError> {
    let mut counts = Counts::default();
    let mut header_seen = false;
    for (index, text) in input.lines().enumerate() {
        let number = index + 1;
        let text = text.map_err(|e| CliError::caused(format!("cannot read line {number}"), &e))?;
        if text.trim().is_empty() {
            continue;
        }
        let line = match serde_json::from_str::<Line>(&text) {
            Ok(line) => line,
            Err(e) if !header_seen => return Err(CliError::caused("line 1 is not a keypal export header", &e)),
            Err(e) => {
                eprintln!("error: line {number}: {e}");
                counts.failed += 1;
                continue;
            }
        };
        if !header_seen {
            check_header(&line)?;
            header_seen = true;
            continue;
        }
        if let Err(reason) = restore_line(deployment, line, &mut counts).await {
            eprintln!("error: line {number}: {reason}");
            counts.failed += 1;
        }
    }
    if !header_seen {
        return Err(CliError::new("the file is empty: not a keypal export"));
    }
    Ok(counts)
}

/// Refuses a first line that is not the header of a format this build reads.
fn check_header(line: &Line) -> Result<(), CliError> {
    match line {
        Line::Header { format, version, .. } if format == FORMAT && *version == VERSION => Ok(()),
        Line::Header { format, version, .. } => Err(CliError::new(format!(
            "line 1: format {format:?} version {version} is not one this keypal reads ({FORMAT:?} version {VERSION})"
        ))),
        _ => Err(CliError::new("line 1 is not a keypal export header")),
    }
}

/// Inserts one line's content unless it is present; why not, when it could not.
async fn restore_line(deployment: &Deployment, line: Line, counts: &mut Counts) -> Result<(), String> {
    let store = &deployment.store;
    match line {
        Line::Header { .. } => Err("a second header".to_owned()),
        Line::Object { kind, id, lookup, body } => {
            if !EXPORTED_KINDS.contains(&kind.as_str()) {
                return Err(format!("documents of kind {kind:?} are not imported"));
            }
            // An application goes in with the claim of its label, in one transaction:
            // never an application whose label another one holds here.
            let label = (kind == "app").then(|| body.get("label").and_then(Value::as_str)).flatten();
            let claim = serde_json::json!({ "app_id": id });
            let mut objects = vec![NewObject { kind: &kind, id: &id, lookup: lookup.as_deref(), body: &body }];
            if let Some(label) = label {
                objects.push(NewObject { kind: "app_label", id: label, lookup: None, body: &claim });
            }
            match store.insert_objects(&objects, None).await {
                Ok(()) => counts.objects.note(true),
                Err(StoreError::Duplicate) => {
                    if store.get_object(&kind, &id).await.map_err(|e| e.to_string())?.is_none() {
                        return Err(match label {
                            Some(label) => format!(
                                "application {id}: its label {label:?} or client secret belongs to another application here"
                            ),
                            None => format!("another {kind} document has the lookup of {kind} {id}"),
                        });
                    }
                    counts.objects.note(false);
                }
                Err(e) => return Err(e.to_string()),
            }
            Ok(())
        }
        Line::Key { record } => {
            let id = record.id;
            if store.get(id).await.map_err(|e| e.to_string())?.is_some() {
                counts.keys.note(false);
                return Ok(());
            }
            let mut event = Event::new(Action::Imported, OffsetDateTime::now_utc(), Operator::context());
            event.details = Some(serde_json::json!({ "source": "keypal import" }));
            match store.insert(*record, None, event).await {
                Ok(_) => counts.keys.note(true),
                Err(StoreError::Duplicate) => return Err(format!("another key has the lookup value of key {id}")),
                Err(e) => return Err(e.to_string()),
            }
            Ok(())
        }
        Line::Audit { event } => {
            match store.restore_event(&event).await {
                Ok(()) => counts.events.note(true),
                Err(StoreError::Duplicate) => counts.events.note(false),
                Err(e) => return Err(e.to_string()),
            }
            Ok(())
        }
    }
}
