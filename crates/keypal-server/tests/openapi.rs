//! The OpenAPI document (`GET /openapi.json`) is exact: every route is in it with its
//! parameters, every operation lists the refusals it can answer with an example of each,
//! and its error codes are those of docs/SERVER.md. (scripts/schemathesis.sh checks the
//! same document against a running server, request by request.)

// Test helpers assert by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{Db, TestServer, json_of};
use keypal_server::{ApiDoc, CODES};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use utoipa::OpenApi;

fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap()
}

/// Every (path, method, operation) of the document.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    all
}

/// The `{name}`s of a path template.
fn path_names(path: &str) -> BTreeSet<String> {
    path.split('{').skip(1).filter_map(|rest| rest.split_once('}')).map(|(name, _)| name.to_owned()).collect()
}

#[test]
fn every_operation_declares_its_path_parameters_and_a_unique_id() {
    let document = document();
    let mut ids = BTreeSet::new();
    for (path, method, operation) in operations(&document) {
        let declared: BTreeMap<String, &Value> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| (p["name"].as_str().unwrap().to_owned(), p))
            .collect();
        assert_eq!(declared.keys().cloned().collect::<BTreeSet<_>>(), path_names(&path), "{method} {path}");
        for (name, parameter) in declared {
            assert_eq!(parameter["required"], true, "{method} {path}: {name} is required");
            assert!(parameter["schema"].is_object(), "{method} {path}: {name} has a schema");
        }
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            assert!(matches!(parameter["in"].as_str(), Some("path" | "query")), "{method} {path}: {parameter}");
            assert!(!parameter["schema"]["type"].to_string().contains("null"), "{method} {path}: {parameter}");
        }
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
    }
}

#[test]
fn every_response_is_described_and_every_refusal_has_an_example_of_each_code() {
    let document = document();
    for (path, method, operation) in operations(&document) {
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path} has a success");
        for common in ["408", "500"] {
            assert!(responses.contains_key(common), "{method} {path} lacks {common}");
        }
        for (status, response) in responses {
            assert!(!response["description"].as_str().unwrap_or_default().is_empty(), "{method} {path} {status}");
            let code: u16 = status.parse().unwrap();
            // `/readyz`'s 503 is its answer (what failed), not a refusal.
            if code < 400 || (path == "/readyz" && code == 503) {
                continue;
            }
            let examples = response["content"]["application/json"]["examples"].as_object().unwrap();
            assert!(!examples.is_empty(), "{method} {path} {status}");
            for (name, example) in examples {
                let known = CODES.iter().any(|c| c.status == code && c.code == name);
                assert!(known, "{method} {path} {status}: {name} is not a code of that status in CODES");
                assert_eq!(example["value"]["error"]["code"], name.as_str());
            }
        }
        // What every operation taking a body or a credential can be refused with.
        if operation.get("requestBody").is_some() {
            for status in ["400", "413", "415"] {
                assert!(responses.contains_key(status), "{method} {path} takes a body but lacks {status}");
            }
        }
        let required_credential =
            operation["security"].as_array().is_some_and(|r| r.iter().all(|r| r.as_object().unwrap().len() == 1));
        if required_credential {
            assert!(responses.contains_key("401"), "{method} {path} needs a credential but lacks 401");
        }
    }
}

#[test]
fn every_reference_resolves() {
    let document = document();
    let mut pending = vec![&document];
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    let pointer = target.strip_prefix('#').unwrap();
                    assert!(document.pointer(pointer).is_some(), "{target} does not resolve");
                }
                pending.extend(map.values());
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    let schemes = document["components"]["securitySchemes"].as_object().unwrap();
    for (path, method, operation) in operations(&document) {
        for requirement in operation["security"].as_array().into_iter().flatten() {
            for scheme in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains_key(scheme), "{method} {path}: no scheme {scheme}");
            }
        }
    }
}

/// The table of errors in docs/SERVER.md: the backquoted codes of each status row.
fn server_md_codes() -> BTreeSet<(u16, String)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SERVER.md")).unwrap();
    let table = text.split("## Errors").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut codes = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| ")) {
        let mut cells = row.split('|').skip(1);
        let (Some(status), Some(list)) = (cells.next(), cells.next()) else { continue };
        let Ok(status) = status.trim().parse::<u16>() else { continue };
        for code in list.split('`').skip(1).step_by(2) {
            if code.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                codes.insert((status, code.to_owned()));
            }
        }
    }
    codes
}

#[test]
fn the_error_codes_are_those_of_the_table_in_server_md() {
    let codes: BTreeSet<(u16, String)> = CODES.iter().map(|c| (c.status, c.code.to_owned())).collect();
    assert_eq!(codes, server_md_codes(), "CODES and docs/SERVER.md's table of errors differ");
}

/// The status of a `StatusCode::NAME` the sources use.
fn status_named(name: &str) -> u16 {
    match name {
        "BAD_REQUEST" => 400,
        "UNAUTHORIZED" => 401,
        "FORBIDDEN" => 403,
        "NOT_FOUND" => 404,
        "METHOD_NOT_ALLOWED" => 405,
        "REQUEST_TIMEOUT" => 408,
        "CONFLICT" => 409,
        "PAYLOAD_TOO_LARGE" => 413,
        "UNSUPPORTED_MEDIA_TYPE" => 415,
        "TOO_MANY_REQUESTS" => 429,
        "INTERNAL_SERVER_ERROR" => 500,
        "SERVICE_UNAVAILABLE" => 503,
        other => panic!("add StatusCode::{other} to status_named"),
    }
}

#[test]
fn every_error_the_sources_make_has_its_code_in_codes() {
    let mut files = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let mut made = BTreeSet::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // `ApiError::new(StatusCode::NAME, "CODE", ...)`, however it is wrapped.
        for call in text.split("ApiError::new(").skip(1) {
            let args: String = call.chars().filter(|c| !c.is_whitespace()).take(80).collect();
            let Some(rest) = args.strip_prefix("StatusCode::") else { continue };
            let (name, rest) = rest.split_once(',').unwrap();
            let Some(code) = rest.strip_prefix('"').and_then(|r| r.split_once('"')).map(|(code, _)| code) else {
                continue;
            };
            made.insert((status_named(name), code.to_owned(), path.display().to_string()));
        }
    }
    assert!(made.len() > 10, "the scan found the errors: {made:?}");
    for (status, code, file) in made {
        assert!(CODES.iter().any(|c| c.status == status && c.code == code), "{file}: {status} {code} is not in CODES");
    }
}

/// A value of a path parameter: its example, or a fresh UUID.
fn example(parameter: &Value) -> String {
    let schema = &parameter["schema"];
    parameter["example"]
        .as_str()
        .or_else(|| schema["examples"][0].as_str())
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_of_the_document_is_routed_and_other_methods_are_not() {
    let mut server = TestServer::start(Db::Sqlite).await;
    server.login().await;
    let document = document();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let mut url = path.clone();
            for parameter in operation["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path") {
                let name = parameter["name"].as_str().unwrap();
                url = url.replace(&format!("{{{name}}}"), &example(parameter));
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // Without a body or credential: refused by the operation itself, never by the router.
            let (status, body) = json_of(server.anon(method.clone(), &url).send().await.unwrap()).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {url}: {body}");
            assert_ne!(body["error"]["message"], "no such endpoint", "{method} {url} is not routed");
        }
        let documented: BTreeSet<String> = item.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        for method in ["GET", "POST", "PATCH", "DELETE", "PUT"] {
            if documented.contains(method) {
                continue;
            }
            let url = path.replace(['{', '}'], "");
            let response = server.anon(Method::from_bytes(method.as_bytes()).unwrap(), &url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is not in the document");
        }
    }
    // The document the server serves is this one.
    let (status, served) = json_of(server.anon(Method::GET, "/openapi.json").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, document);
    server.stop().await;
}
