//! What the operator's commands print: tables with aligned columns, or JSON
//! (`--json`), and the management API's refusals as `error: [CODE] ...`.

use keypal_server::ApiError;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::CliError;
use crate::io::Out;

/// A time as RFC 3339.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

/// Rows as lines: the columns aligned, two spaces apart, no trailing spaces.
pub fn aligned<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let widths: Vec<usize> = (0..N).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

/// Prints `lines`, one per line, on stdout.
pub fn print_lines(lines: &[String]) -> Result<(), CliError> {
    let mut out = Out::new();
    for line in lines {
        out.line(line)?;
    }
    out.finish()
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::caused("cannot write the JSON", &e))?;
    print_lines(&[text])
}

/// A refusal of the management API's rules, with its stable code and the option at fault.
pub fn refused(error: &ApiError) -> CliError {
    match &error.field {
        Some(field) => CliError::new(format!("[{}] {field}: {}", error.code, error.message)),
        None => CliError::new(format!("[{}] {}", error.code, error.message)),
    }
}
