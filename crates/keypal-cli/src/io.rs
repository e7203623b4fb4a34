//! Reading keys and secret files, writing output.

use std::io::{BufWriter, ErrorKind, Read, StdoutLock, Write};
use std::path::Path;

use keypal::PlainKey;
use keypal::config::SecretString;

use crate::error::CliError;

/// The key given as an argument, or read from stdin when the argument is `-` or absent.
///
/// One trailing newline (`\n` or `\r\n`) of stdin is dropped. Error messages never
/// show the key.
pub fn read_key(arg: Option<&str>) -> Result<PlainKey, CliError> {
    let key = match arg {
        Some(key) if key != "-" => PlainKey::new(key),
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::caused("cannot read the key from stdin", &e))?;
            strip_newline(&mut text);
            PlainKey::new(text)
        }
    };
    if key.expose().is_empty() {
        return Err(CliError::new("the key is empty"));
    }
    if key.expose().contains(['\n', '\r']) {
        return Err(CliError::new("the key contains a line break: give one key"));
    }
    Ok(key)
}

/// The secret held in `path`, without one trailing newline. `what` names it in errors.
pub fn read_secret_file(path: &Path, what: &str) -> Result<SecretString, CliError> {
    let mut text = std::fs::read_to_string(path)
        .map_err(|e| CliError::caused(format!("cannot read the {what} from {}", path.display()), &e))?;
    strip_newline(&mut text);
    let secret = SecretString::new(text);
    if secret.expose().is_empty() {
        return Err(CliError::new(format!("{} is empty: it must hold the {what}", path.display())));
    }
    Ok(secret)
}

/// The secret in environment variable `name`; `None` when it is unset or empty (an
/// empty variable counts as unset, as clap does for options' variables).
pub fn secret_from_env(name: &str) -> Result<Option<SecretString>, CliError> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(SecretString::new(value))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(CliError::new(format!("{name} is not valid UTF-8"))),
    }
}

/// Drops one trailing `\n` or `\r\n`, in place (no copy of a secret is left behind).
fn strip_newline(text: &mut String) {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
}

/// Buffered standard output. A reader that goes away ends the command quietly.
pub struct Out {
    inner: BufWriter<StdoutLock<'static>>,
}

impl Out {
    /// Standard output, locked for this command.
    pub fn new() -> Self {
        Self { inner: BufWriter::new(std::io::stdout().lock()) }
    }

    /// Writes `text` and a newline.
    pub fn line(&mut self, text: &str) -> Result<(), CliError> {
        self.inner.write_all(text.as_bytes()).and_then(|()| self.inner.write_all(b"\n")).map_err(write_error)
    }

    /// Writes `text` as it is.
    pub fn raw(&mut self, text: &[u8]) -> Result<(), CliError> {
        self.inner.write_all(text).map_err(write_error)
    }

    /// Flushes what is buffered.
    pub fn finish(mut self) -> Result<(), CliError> {
        self.inner.flush().map_err(write_error)
    }
}

fn write_error(err: std::io::Error) -> CliError {
    if err.kind() == ErrorKind::BrokenPipe {
        CliError::broken_pipe()
    } else {
        CliError::caused("cannot write the output", &err)
    }
}

#[cfg(test)]
mod tests {
    use super::strip_newline;

    #[test]
    fn one_trailing_newline_is_dropped() {
        for (input, expected) in [("abc\n", "abc"), ("abc\r\n", "abc"), ("abc", "abc"), ("abc\n\n", "abc\n"), ("", "")]
        {
            let mut text = input.to_owned();
            strip_newline(&mut text);
            assert_eq!(text, expected, "{input:?}");
        }
    }
}
