//! How commands end: a [`Status`] when they ran to the end, a [`CliError`] when not.

use std::process::ExitCode;

/// The outcome of a command that ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done (exit 0).
    Success,
    /// The key, hash or configuration that was checked is not valid (exit 1).
    Rejected,
}

impl Status {
    /// The process exit code for this outcome.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Status::Success => ExitCode::SUCCESS,
            Status::Rejected => ExitCode::from(1),
        }
    }
}

/// What a command returns.
pub type CmdResult = Result<Status, CliError>;

/// A command that could not do its job. Reported on stderr as `error: MESSAGE`.
///
/// Messages never hold secrets: keys, peppers and passwords are never put into one.
#[derive(Debug)]
pub struct CliError {
    message: String,
    code: u8,
    silent: bool,
}

impl CliError {
    /// An error: bad usage, unreadable input or a failure (exit 2).
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: 2, silent: false }
    }

    /// The thing checked is not valid, with the reason (exit 1).
    pub fn rejected(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: 1, silent: false }
    }

    /// An error with the chain of causes of `err` appended (`error: context: err: its
    /// cause`), each cause once even when an error already shows its source.
    pub fn caused(context: impl std::fmt::Display, err: &dyn std::error::Error) -> Self {
        let mut message = format!("{context}: {err}");
        let mut source = err.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(&format!(": {text}"));
            }
            source = cause.source();
        }
        Self::new(message)
    }

    /// The reader of our output went away (`keypal generate --count 1000 | head -1`):
    /// stop quietly, as other command-line tools do.
    pub fn broken_pipe() -> Self {
        Self { message: String::new(), code: 0, silent: true }
    }

    /// The message, without the `error: ` in front.
    #[cfg(test)]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prints the error on stderr and gives the exit code.
    pub fn report(&self) -> ExitCode {
        if !self.silent {
            eprintln!("error: {}", self.message);
        }
        ExitCode::from(self.code)
    }
}
