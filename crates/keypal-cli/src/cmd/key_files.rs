//! `keypal keys import` and `keypal keys export`: an application's keys from and to
//! files. An import reads NDJSON (one import item a line, as `POST
//! /v1/apps/{id}/keys/import` takes them) or CSV (a header line naming the item fields,
//! `hash.algorithm`, `hash.value`, ... for the hash), from a file or stdin, in batches
//! of one transaction each; a bad line is reported with its number and reason and the
//! others go in. An export writes each active key as the import item that brings it
//! back, so `keys export --app a | keys import --app b -` moves keys.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use keypal_server::ApiError;
use keypal_server::operator::{
    BATCH, ITEM_FIELDS, ImportReport, ImportResult, ImportStatus, MAX_LINE, NumberedItem, line_item, line_too_long,
};
use serde_json::{Map, Value};

use crate::deployment::{DeploymentArgs, MASTER_KEY_HELP};
use crate::error::{CliError, CmdResult, Status};
use crate::io::Out;
use crate::table::print_json;

/// Results listed by `--json`, past which they are counted only (as the HTTP import).
const MAX_REPORTED: usize = 10_000;

/// Arguments of `keypal keys import`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct ImportKeysArgs {
    /// The application's id or label.
    #[arg(long, value_name = "APP")]
    pub app: String,

    /// The items: NDJSON or CSV (`-` or none: standard input).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// The file's format [default: csv for a .csv file, else ndjson].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<ItemFormat>,

    /// Check every item (and whether its key is stored already) without storing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Import keys even when their owner already has the most active keys the
    /// application allows.
    #[arg(long)]
    pub skip_limits: bool,

    /// Print the report as JSON on stdout (`POST /v1/apps/{id}/keys/import`'s answer
    /// to NDJSON: totals, and the lines not created).
    #[arg(long)]
    pub json: bool,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// Arguments of `keypal keys export`.
#[derive(Debug, Args)]
#[command(after_help = MASTER_KEY_HELP)]
pub struct ExportKeysArgs {
    /// The application's id or label.
    #[arg(long, value_name = "APP")]
    pub app: String,

    /// The deployment.
    #[command(flatten)]
    pub deployment: DeploymentArgs,
}

/// The formats of an import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ItemFormat {
    /// One JSON object a line.
    Ndjson,
    /// A header line of item field names, then one item a line.
    Csv,
}

/// Runs `keypal keys import`.
pub fn import(args: &ImportKeysArgs) -> CmdResult {
    let path = args.file.as_deref().filter(|path| *path != Path::new("-"));
    let format = args.format.unwrap_or(match path {
        Some(path) if path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("csv")) => ItemFormat::Csv,
        _ => ItemFormat::Ndjson,
    });
    let (input, size): (Box<dyn Read>, Option<u64>) = match path {
        Some(path) => {
            let file = File::open(path).map_err(|e| CliError::caused(format!("cannot read {}", path.display()), &e))?;
            let size = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            (Box::new(file), size)
        }
        None => (Box::new(std::io::stdin().lock()), None),
    };
    let progress = Progress::new(size, args.dry_run);
    let counted = Counted { inner: input, progress: progress.bar.clone() };
    let mut items: Box<dyn Iterator<Item = NumberedItem>> = match format {
        ItemFormat::Ndjson => Box::new(NdjsonItems::new(counted)),
        ItemFormat::Csv => Box::new(CsvItems::new(counted)?),
    };
    let report = args.deployment.operate(async |operator| {
        let importer = operator.importer(&args.app, args.skip_limits).map_err(|e| crate::table::refused(&e))?;
        let mut report = ImportReport::default();
        loop {
            let batch: Vec<NumberedItem> = items.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                break;
            }
            let results = if args.dry_run {
                let mut results = Vec::with_capacity(batch.len());
                for item in batch {
                    results.push(importer.check(item).await);
                }
                results
            } else {
                importer.import(batch).await.map_err(|e| crate::table::refused(&e))?
            };
            for result in results {
                progress.note(&result);
                report.add(result, |status, listed| status != ImportStatus::Created && listed < MAX_REPORTED);
            }
        }
        Ok(report)
    })?;
    progress.finish(&report);
    if args.json {
        print_json(&report)?;
    }
    Ok(if report.errors == 0 { Status::Success } else { Status::Rejected })
}

/// Runs `keypal keys export`.
pub fn export(args: &ExportKeysArgs) -> CmdResult {
    let (written, unmovable) = args.deployment.operate(async |operator| {
        let mut out = Out::new();
        let (mut written, mut unmovable) = (0u64, 0u64);
        let mut cursor = None;
        loop {
            let (items, next) = operator.export_keys(&args.app, cursor).await.map_err(|e| crate::table::refused(&e))?;
            for (id, item) in items {
                match item {
                    Some(item) => {
                        let line =
                            serde_json::to_string(&item).map_err(|e| CliError::caused("cannot write the JSON", &e))?;
                        out.line(&line)?;
                        written += 1;
                    }
                    None => {
                        eprintln!(
                            "keypal: key {} is hashed with HMAC-SHA256, keyed by this deployment's master key: it \
                             cannot be moved, left out",
                            id.0
                        );
                        unmovable += 1;
                    }
                }
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        out.finish()?;
        Ok((written, unmovable))
    })?;
    eprintln!("keypal: exported {written} keys of {}{}", args.app, left_out(unmovable));
    Ok(Status::Success)
}

fn left_out(unmovable: u64) -> String {
    if unmovable == 0 { String::new() } else { format!("; {unmovable} could not be moved") }
}

/// What the terminal sees of an import: a progress bar with the rate and the time left
/// when stderr is a terminal, and a line for each item refused, as it comes.
struct Progress {
    bar: ProgressBar,
    started: Instant,
    done: std::cell::Cell<u64>,
    dry_run: bool,
}

impl Progress {
    /// A bar over `size` bytes (a spinner when the size is unknown), drawn only on a
    /// terminal.
    fn new(size: Option<u64>, dry_run: bool) -> Self {
        let bar = match size {
            Some(size) => ProgressBar::new(size).with_style(
                ProgressStyle::with_template("{bar:30} {percent:>3}%  {msg}  {elapsed} elapsed, ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg}  {elapsed} elapsed")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        bar.set_draw_target(target);
        Progress { bar, started: Instant::now(), done: std::cell::Cell::new(0), dry_run }
    }

    /// Counts an item; says why when it was refused.
    fn note(&self, result: &ImportResult) {
        self.done.set(self.done.get() + 1);
        if let Some(error) = &result.error {
            self.bar.suspend(|| eprintln!("keypal: line {}: [{}] {}", result.index, error.code, error.message));
        }
        if self.done.get().is_multiple_of(1000) {
            self.bar.set_message(format!("{} keys, {} keys/s", self.done.get(), rate(self.done.get(), self.elapsed())));
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Clears the bar and prints the one-line summary.
    fn finish(&self, report: &ImportReport) {
        self.bar.finish_and_clear();
        let elapsed = self.elapsed();
        let total = report.created + report.exists + report.errors;
        let verb = if self.dry_run { "dry run: would import" } else { "imported" };
        eprintln!(
            "keypal: {verb} {} keys, {} already there, {} refused; {total} items in {:.1} s ({} keys/s)",
            report.created,
            report.exists,
            report.errors,
            elapsed.as_secs_f64(),
            rate(total, elapsed)
        );
    }
}

/// Items per second.
fn rate(items: u64, elapsed: Duration) -> u64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 { 0 } else { (items as f64 / seconds) as u64 }
}

/// A reader that moves the progress bar by the bytes read.
struct Counted<R> {
    inner: R,
    progress: ProgressBar,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// The items of an NDJSON input, numbered by line (from 1, blank lines counted and
/// skipped); a line longer than 64 KiB, not JSON, or not readable is that line's error.
struct NdjsonItems<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
    number: u64,
    done: bool,
}

impl<R: Read> NdjsonItems<R> {
    fn new(reader: R) -> Self {
        NdjsonItems { reader: BufReader::with_capacity(256 * 1024, reader), line: Vec::new(), number: 0, done: false }
    }

    /// Reads the next line into `self.line`, at most [`MAX_LINE`] bytes of it: `Ok(None)`
    /// at the end, `Ok(Some(false))` for a line that was too long (skipped to its end).
    fn read_line(&mut self) -> std::io::Result<Option<bool>> {
        self.line.clear();
        let limit = MAX_LINE as u64 + 1;
        let n = (&mut self.reader).take(limit).read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(None);
        }
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            return Ok(Some(true));
        }
        if self.line.len() <= MAX_LINE {
            return Ok(Some(true)); // the last line, without a line break
        }
        // Too long: drop the rest of it as it comes.
        loop {
            let buffer = self.reader.fill_buf()?;
            if buffer.is_empty() {
                return Ok(Some(false));
            }
            match buffer.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.reader.consume(at + 1);
                    return Ok(Some(false));
                }
                None => {
                    let len = buffer.len();
                    self.reader.consume(len);
                }
            }
        }
    }
}

impl<R: Read> Iterator for NdjsonItems<R> {
    type Item = NumberedItem;

    fn next(&mut self) -> Option<NumberedItem> {
        while !self.done {
            let line = self.read_line();
            self.number += 1;
            let item = match line {
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(error) => {
                    self.done = true;
                    Err(ApiError::invalid("line", format!("cannot be read: {error}")))
                }
                Ok(Some(false)) => Err(line_too_long()),
                Ok(Some(true)) => match line_item(&self.line) {
                    Some(item) => item,
                    None => continue,
                },
            };
            return Some((self.number, item));
        }
        None
    }
}

/// The items of a CSV input: the header names the item fields (the hash's as
/// `hash.algorithm`, `hash.encoding`, `hash.salt`, `hash.covers`, `hash.value`); an
/// empty cell leaves its field out. `scopes` is a JSON array or names separated by
/// spaces or commas, `metadata` JSON, `enabled` true or false, `remaining` and
/// `expires_in_days` numbers. Items are numbered by the line they start on.
struct CsvItems<R> {
    records: csv::StringRecordsIntoIter<R>,
    columns: Vec<String>,
}

/// The fields of an item's `hash`, as CSV columns.
const HASH_FIELDS: [&str; 5] = ["algorithm", "encoding", "salt", "covers", "value"];

impl<R: Read> CsvItems<R> {
    /// Reads the header and checks that every column is an item field.
    fn new(reader: R) -> Result<Self, CliError> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let header = reader.headers().map_err(|e| CliError::caused("cannot read the CSV header", &e))?;
        let columns: Vec<String> = header.iter().map(|c| c.trim().to_owned()).collect();
        for column in &columns {
            let known = match column.strip_prefix("hash.") {
                Some(field) => HASH_FIELDS.contains(&field),
                None => column != "hash" && ITEM_FIELDS.contains(&column.as_str()),
            };
            if !known {
                return Err(CliError::new(format!(
                    "the CSV column {column:?} is not an item field; the columns are: {}, hash.{}",
                    ITEM_FIELDS.iter().filter(|f| **f != "hash").copied().collect::<Vec<_>>().join(", "),
                    HASH_FIELDS.join(", hash.")
                )));
            }
        }
        Ok(CsvItems { records: reader.into_records(), columns })
    }

    /// The item of a row.
    fn item(&self, row: &csv::StringRecord) -> Result<Value, ApiError> {
        if row.len() != self.columns.len() {
            return Err(ApiError::invalid(
                "line",
                format!("has {} cells, the header {} columns", row.len(), self.columns.len()),
            ));
        }
        let mut item = Map::new();
        let mut hash = Map::new();
        for (column, cell) in self.columns.iter().zip(row.iter()) {
            if cell.is_empty() {
                continue;
            }
            if let Some(field) = column.strip_prefix("hash.") {
                hash.insert(field.to_owned(), cell.into());
                continue;
            }
            item.insert(column.clone(), cell_value(column, cell)?);
        }
        if !hash.is_empty() {
            item.insert("hash".to_owned(), Value::Object(hash));
        }
        Ok(Value::Object(item))
    }
}

/// A cell as its field's JSON value.
fn cell_value(column: &str, cell: &str) -> Result<Value, ApiError> {
    let json = |what: &str| {
        serde_json::from_str::<Value>(cell).map_err(|e| ApiError::invalid(column, format!("must be {what}: {e}")))
    };
    Ok(match column {
        "metadata" => json("JSON")?,
        "scopes" if cell.trim_start().starts_with('[') => json("a JSON array or names separated by spaces")?,
        "scopes" => cell.split([' ', ',']).filter(|s| !s.is_empty()).map(|s| Value::from(s.to_owned())).collect(),
        "enabled" => match cell.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(ApiError::invalid(column, "must be true or false")),
        },
        "refill" => match cell.parse::<keypal::Refill>() {
            Ok(refill) => serde_json::to_value(refill).map_err(|e| ApiError::invalid(column, e.to_string()))?,
            Err(e) => return Err(ApiError::invalid(column, format!("{e}; write AMOUNT/INTERVAL, like 1000/monthly"))),
        },
        "remaining" | "expires_in_days" => match cell.trim().parse::<u64>() {
            Ok(n) => Value::from(n),
            Err(_) => return Err(ApiError::invalid(column, "must be a whole number")),
        },
        _ => Value::from(cell.to_owned()),
    })
}

impl<R: Read> Iterator for CsvItems<R> {
    type Item = NumberedItem;

    fn next(&mut self) -> Option<NumberedItem> {
        let row = self.records.next()?;
        Some(match row {
            Ok(row) => {
                let line = row.position().map_or(0, |p| p.line());
                (line, self.item(&row))
            }
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line());
                (line, Err(ApiError::invalid("line", format!("is not CSV: {error}"))))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn ndjson(text: &str) -> Vec<(u64, Result<Value, String>)> {
        NdjsonItems::new(text.as_bytes()).map(|(n, item)| (n, item.map_err(|e| e.message))).collect()
    }

    #[test]
    fn ndjson_lines_are_numbered_blank_ones_skipped_and_bad_ones_reported() {
        let long = format!("{{\"name\": \"{}\"}}", "x".repeat(MAX_LINE));
        let text = format!("{{\"key\": \"a\"}}\r\n\n  \nnot json\n{long}\n{{\"key\": \"b\"}}");
        let items = ndjson(&text);
        assert_eq!(items.len(), 4, "{items:?}");
        assert_eq!(items[0], (1, Ok(serde_json::json!({"key": "a"}))));
        assert_eq!(items[1].0, 4);
        assert!(items[1].1.as_ref().unwrap_err().starts_with("the line is not valid JSON"));
        assert_eq!(items[2], (5, Err("the line is longer than 64 KiB".to_owned())));
        assert_eq!(items[3], (6, Ok(serde_json::json!({"key": "b"}))));
    }

    #[test]
    fn csv_cells_become_item_fields_and_empty_cells_are_left_out() {
        let text = "key_id,hash.algorithm,hash.value,scopes,metadata,remaining,enabled\n";
        assert!(CsvItems::new(text.as_bytes()).is_err(), "an unknown column is refused before anything is read");

        let text = "id,hash.algorithm,hash.covers,hash.value,owner_id,scopes,metadata,remaining,enabled,name\n\
                    k1,bcrypt,secret,$2b$x,u1,read write,\"{\"\"plan\"\": \"\"pro\"\"}\",10,false,\"Main, old\"\n\
                    k2,sha256,,ab,,\"[\"\"a\"\"]\",,,,\n\
                    k3,sha256,,ab,,,,ten,,\n\
                    k4,sha256\n";
        let items: Vec<_> = CsvItems::new(text.as_bytes()).unwrap().collect();
        assert_eq!(items.len(), 4);
        let first = items[0].1.as_ref().unwrap();
        assert_eq!(items[0].0, 2, "numbered by line");
        assert_eq!(
            *first,
            serde_json::json!({
                "id": "k1", "hash": {"algorithm": "bcrypt", "covers": "secret", "value": "$2b$x"},
                "owner_id": "u1", "scopes": ["read", "write"], "metadata": {"plan": "pro"},
                "remaining": 10, "enabled": false, "name": "Main, old"
            })
        );
        let second = items[1].1.as_ref().unwrap();
        assert_eq!(
            *second,
            serde_json::json!({"id": "k2", "hash": {"algorithm": "sha256", "value": "ab"}, "scopes": ["a"]})
        );
        assert_eq!(items[2].1.as_ref().unwrap_err().field.as_deref(), Some("remaining"));
        assert!(items[3].1.as_ref().unwrap_err().message.contains("cells"), "a short row is that line's error");
    }
}
