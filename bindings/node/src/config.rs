//! The configuration as JavaScript writes it (camelCase) to the Rust `Config` and back:
//! names are converted with the help of the Rust `Config`'s own JSON Schema, so that
//! tier names and pepper ids (map keys chosen by the user) are left as they are. Every
//! check is the Rust one (`Config::validate`, then the builder's).

use std::sync::OnceLock;

use keypal::{Config, ConfigProblem};
use serde_json::{Map, Value};

use crate::failure::Failure;

/// `bcrypt_cost` → `bcryptCost`.
pub fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `bcryptCost` → `bcrypt_cost`.
pub fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A Rust field path (`hash.bcrypt_cost`, `legacy_templates[0]`, `tiers.pro_plus.segment`)
/// in camelCase (`hash.bcryptCost`, `legacyTemplates[0]`, `tiers.pro_plus.segment`): the
/// name after `tiers` or `peppers` is the user's and stays.
pub fn camel_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut keep_next = false;
    for (i, segment) in path.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if keep_next {
            out.push_str(segment);
            keep_next = false;
        } else {
            out.push_str(&camel(segment));
            keep_next = segment == "tiers" || segment == "peppers";
        }
    }
    out
}

fn rust_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(Config::json_schema)
}

/// Follows a local `$ref` (`#/$defs/HashConfig`).
fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => root.pointer(pointer).map_or(schema, |s| resolve(s, root)),
        None => schema,
    }
}

/// The schema of an object value: a struct's (`properties`) or a map's (`additionalProperties`).
fn object_schema<'a>(schema: &'a Value, root: &'a Value) -> Option<&'a Value> {
    let schema = resolve(schema, root);
    if schema.get("properties").is_some() || schema.get("additionalProperties").is_some_and(Value::is_object) {
        return Some(schema);
    }
    ["anyOf", "oneOf", "allOf"]
        .iter()
        .filter_map(|k| schema.get(k).and_then(Value::as_array))
        .flatten()
        .find_map(|branch| object_schema(branch, root))
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// Converts a camelCase value to the Rust names, dropping (and reporting) unknown settings.
fn to_rust(value: Value, schema: &Value, root: &Value, path: &str, problems: &mut Vec<ConfigProblem>) -> Value {
    match value {
        Value::Object(map) => {
            let Some(schema) = object_schema(schema, root) else { return Value::Object(map) };
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                let mut out = Map::new();
                for (name, value) in map {
                    let rust = snake(&name);
                    match properties.get(&rust) {
                        Some(sub) => {
                            let value = to_rust(value, sub, root, &join(path, &name), problems);
                            out.insert(rust, value);
                        }
                        None => problems.push(ConfigProblem {
                            path: join(path, &name),
                            message: format!(
                                "unknown setting (known: {})",
                                properties.keys().map(|k| camel(k)).collect::<Vec<_>>().join(", ")
                            ),
                        }),
                    }
                }
                Value::Object(out)
            } else {
                let sub = schema.get("additionalProperties").unwrap_or(&Value::Null);
                let out = map
                    .into_iter()
                    .map(|(name, value)| {
                        let value = to_rust(value, sub, root, &join(path, &name), problems);
                        (name, value)
                    })
                    .collect();
                Value::Object(out)
            }
        }
        Value::Array(items) => {
            let schema = resolve(schema, root);
            match schema.get("items") {
                Some(sub) => Value::Array(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| to_rust(item, sub, root, &format!("{path}[{i}]"), problems))
                        .collect(),
                ),
                None => Value::Array(items),
            }
        }
        other => other,
    }
}

/// Reads the configuration `createApiKeyManager` was given (as JSON, without `storage`)
/// and checks it: every problem, each with its camelCase path, at once.
pub fn parse(json: &str) -> Result<Config, Failure> {
    let value: Value = serde_json::from_str(json).map_err(|e| Failure::invalid("config", e))?;
    if !value.is_object() {
        return Err(Failure::Config(vec![ConfigProblem {
            path: String::new(),
            message: "the configuration is an object".into(),
        }]));
    }
    let root = rust_schema();
    let mut problems = Vec::new();
    let value = to_rust(value, root, root, "", &mut problems);
    let config: Config = match serde_path_to_error::deserialize(value) {
        Ok(config) => config,
        Err(error) => {
            let path = error.path().to_string();
            problems.push(ConfigProblem {
                path: camel_path(if path == "." { "" } else { &path }),
                message: crate::input::without_position(&error.into_inner()),
            });
            return Err(Failure::Config(problems));
        }
    };
    if let Err(error) = config.validate() {
        problems.extend(
            error.problems().iter().map(|p| ConfigProblem { path: camel_path(&p.path), message: p.message.clone() }),
        );
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(Failure::Config(problems))
    }
}

/// Renames every `properties` entry of a schema to camelCase, and the `required` lists with them.
fn camel_schema_value(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let value = match (key.as_str(), value) {
                    ("properties", Value::Object(properties)) => Value::Object(
                        properties.iter().map(|(name, sub)| (camel(name), camel_schema_value(sub))).collect(),
                    ),
                    ("default", Value::Object(_)) => camel_keys(value),
                    ("required", Value::Array(names)) => Value::Array(
                        names.iter().map(|n| n.as_str().map_or(n.clone(), |n| Value::String(camel(n)))).collect(),
                    ),
                    _ => camel_schema_value(value),
                };
                out.insert(key.clone(), value);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(camel_schema_value).collect()),
        other => other.clone(),
    }
}

/// A default value of a struct, its keys in camelCase.
fn camel_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (camel(k), camel_keys(v))).collect()),
        other => other.clone(),
    }
}

/// The JSON Schema of the JavaScript configuration.
pub fn camel_schema() -> Value {
    let mut schema = camel_schema_value(rust_schema());
    if let Some(map) = schema.as_object_mut() {
        map.insert("title".into(), Value::String("keypal configuration (createApiKeyManager)".into()));
        if let Some(Value::Object(properties)) = map.get_mut("properties") {
            properties.insert(
                "storage".into(),
                serde_json::json!({
                    "description": "The store: a MemoryStore, SqliteStore, PostgresStore or RedisStore (a JavaScript object, not JSON)"
                }),
            );
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_convert_both_ways() {
        assert_eq!(camel("max_active_keys_per_owner"), "maxActiveKeysPerOwner");
        assert_eq!(snake("maxActiveKeysPerOwner"), "max_active_keys_per_owner");
        assert_eq!(camel_path("legacy_templates[1]"), "legacyTemplates[1]");
        assert_eq!(camel_path("tiers.pro_plus.segment"), "tiers.pro_plus.segment");
        assert_eq!(camel_path("hash.bcrypt_cost"), "hash.bcryptCost");
    }

    #[test]
    fn every_problem_is_reported_with_its_camel_case_path() {
        let Err(Failure::Config(problems)) =
            parse(r#"{"length": 8, "hash": {"algorithm": "hmac-sha256", "bcryptCost": 10}, "nope": 1}"#)
        else {
            unreachable!("the configuration is invalid")
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["nope", "length", "hash.bcryptCost", "hash.peppers"]);
    }
}
