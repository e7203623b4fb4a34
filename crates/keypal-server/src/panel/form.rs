//! What the panel's forms share: reading what was typed into the JSON API's request
//! types, and the errors shown next to the fields. The rules themselves are the API's:
//! a form only turns text into values, and shows the API's refusals where they belong.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::session::CarriesCsrf;
use crate::error::ApiError;

/// A form with nothing but the CSRF token (a button).
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

impl CarriesCsrf for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The errors next to a form's fields (`form` for one above the whole form).
#[derive(Debug, Clone, Default)]
pub struct FormErrors(BTreeMap<String, String>);

impl FormErrors {
    /// Whether `field` has an error.
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    /// The error of `field` (empty when none).
    pub fn error(&self, field: &str) -> &str {
        self.0.get(field).map_or("", String::as_str)
    }

    /// Puts `message` next to `field`.
    pub fn set(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.insert(field.into(), message.into());
    }

    /// Whether no field has an error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The API's refusal next to the field it names when the form has it (one of
    /// `known`; `tiers.free` is `tiers`), above the form otherwise.
    pub fn refused(&mut self, error: &ApiError, known: &[&str]) {
        let field = error.field.as_deref().map(|f| f.split('.').next().unwrap_or(f)).filter(|f| known.contains(f));
        // Next to its field, "label: must be ..." reads better as "must be ...".
        let message = match (field, &error.field) {
            (Some(_), Some(path)) => error.message.strip_prefix(&format!("{path}: ")).unwrap_or(&error.message),
            _ => &error.message,
        };
        self.set(field.unwrap_or("form"), message);
    }

    /// The whole number typed in `field` (`None` when blank); `message` next to it when
    /// it is not one.
    pub fn whole_number<T: std::str::FromStr>(&mut self, field: &str, text: &str, message: &str) -> Option<T> {
        match text.trim() {
            "" => None,
            number => number.parse().map_err(|_| self.set(field, message)).ok(),
        }
    }

    /// The JSON typed in `field`; an error next to it when it is not JSON.
    pub fn json(&mut self, field: &str, text: &str) -> Option<Value> {
        serde_json::from_str(text).map_err(|e| self.set(field, format!("not valid JSON: {e}"))).ok()
    }
}

/// What was typed, trimmed, or `None` when blank.
pub fn optional(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Words separated by white space (scopes), none when blank.
pub fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_text_becomes_values_or_errors_next_to_its_field() {
        let mut errors = FormErrors::default();
        assert_eq!(errors.whole_number::<u32>("days", " 30 ", "a number"), Some(30));
        assert_eq!(errors.whole_number::<u32>("days", "  ", "a number"), None);
        assert!(errors.is_empty(), "blank is not an error");
        assert_eq!(errors.whole_number::<u32>("days", "-1", "a number"), None);
        assert_eq!(errors.error("days"), "a number");
        assert_eq!(errors.json("metadata", "{\"a\": 1}"), Some(serde_json::json!({"a": 1})));
        assert_eq!(errors.json("metadata", "{"), None);
        assert!(errors.error("metadata").starts_with("not valid JSON: "), "{}", errors.error("metadata"));
        assert_eq!(optional("  x "), Some("x".to_owned()));
        assert_eq!(optional(" "), None);
        assert_eq!(words(" a  b "), ["a", "b"]);
    }

    #[test]
    fn api_refusals_go_next_to_their_field_or_above_the_form() {
        let mut errors = FormErrors::default();
        errors.refused(&ApiError::invalid("tiers.free", "must be a rate"), &["tiers"]);
        errors.refused(&ApiError::invalid("remaining", "too many"), &["tiers"]);
        assert!(errors.has("tiers") && !errors.has("remaining"));
        assert!(errors.error("form").contains("too many"), "{}", errors.error("form"));
    }
}
