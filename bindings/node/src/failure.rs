//! Errors on their way to JavaScript: each becomes a `KeypalError` with a stable `code`.

use keypal::ConfigProblem;
use serde_json::json;

/// Marks the message of a native error that `index.js` turns into a `KeypalError`.
const MARK: &str = "\u{1}keypal:";

/// Why a native call failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The key manager refused or its store failed.
    #[error(transparent)]
    Keypal(#[from] keypal::Error),
    /// A SQL store could not be opened.
    #[error(transparent)]
    Sql(#[from] keypal_sql::SqlError),
    /// A Redis store could not be opened.
    #[error(transparent)]
    Redis(#[from] keypal_redis::RedisStoreError),
    /// An argument is not what the function takes.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The configuration has problems (paths in camelCase).
    #[error("the configuration has {} problem(s)", .0.len())]
    Config(Vec<ConfigProblem>),
    /// The background runtime could not start.
    #[error("keypal's background threads could not start: {0}")]
    Runtime(String),
}

impl Failure {
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Failure::Invalid { field: field.into(), message: message.to_string() }
    }

    /// The stable code (the Rust crates' codes, plus `INVALID_INPUT` and `INTERNAL_ERROR`).
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Keypal(keypal::Error::Config(_)) | Failure::Config(_) => "CONFIG_INVALID",
            Failure::Keypal(e) => e.code(),
            Failure::Sql(e) => e.code(),
            Failure::Redis(e) => e.code(),
            Failure::Invalid { .. } => "INVALID_INPUT",
            Failure::Runtime(_) => "INTERNAL_ERROR",
        }
    }

    /// The error as Node-API carries it: a message `index.js` reads back.
    pub fn into_napi(self) -> napi::Error {
        let code = self.code();
        let mut body = json!({ "code": code, "message": self.to_string() });
        match &self {
            Failure::Keypal(keypal::Error::Config(error)) => {
                let problems: Vec<_> = error
                    .problems()
                    .iter()
                    .map(|p| ConfigProblem { path: crate::config::camel_path(&p.path), message: p.message.clone() })
                    .collect();
                body["problems"] = problems_json(&problems);
                if problems.is_empty() {
                    body["message"] = json!(error.to_string());
                }
            }
            Failure::Config(problems) => body["problems"] = problems_json(problems),
            Failure::Keypal(keypal::Error::Invalid { field, message }) => {
                let field = crate::config::camel_path(field);
                body["message"] = json!(format!("{field}: {message}"));
                body["field"] = json!(field);
            }
            Failure::Invalid { field, .. } => body["field"] = json!(field),
            Failure::Keypal(keypal::Error::LimitReached { limit }) => body["limit"] = json!(limit),
            Failure::Keypal(keypal::Error::AlreadyExists { existing: Some(id) }) => {
                body["existing"] = json!(id.to_string());
            }
            _ => {}
        }
        napi::Error::new(napi::Status::GenericFailure, format!("{MARK}{body}"))
    }
}

fn problems_json(problems: &[ConfigProblem]) -> serde_json::Value {
    problems.iter().map(|p| json!({ "path": p.path, "message": p.message })).collect()
}

impl From<Failure> for napi::Error {
    fn from(failure: Failure) -> Self {
        failure.into_napi()
    }
}
