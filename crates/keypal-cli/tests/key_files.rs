//! `keypal keys import` and `keypal keys export` as an operator runs them, on SQLite
//! and PostgreSQL deployments, the imported keys verified by a running `keypal serve`.
//! What the commands print is snapshot-tested (tests/snapshots).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Deployment, Output, path_str, scratch_dir, temp_file};
use serde_json::{Value, json};

/// `n` keys of `template` and their SHA-256 hex digests.
fn keys_and_digests(deployment: &Deployment, template: &str, n: usize) -> Vec<(String, String)> {
    let out = deployment.cli(&["generate", "--json", "--template", template, "--count", &n.to_string()]);
    out.assert_code(0);
    out.lines()
        .into_iter()
        .map(|line| {
            let pair: Value = serde_json::from_str(line).unwrap();
            let hash = pair["hash"].as_str().unwrap();
            (pair["key"].as_str().unwrap().to_owned(), hash.strip_prefix("$sha256$").unwrap().to_owned())
        })
        .collect()
}

/// The summary line with its time and rate replaced, so it can be compared.
fn summary(out: &Output) -> String {
    out.stderr
        .lines()
        .map(|line| match line.split_once(" items in ") {
            Some((head, _)) => format!("{head} items in [TIME] ([RATE] keys/s)"),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A report's JSON with the new keys' ids replaced.
fn report(out: &Output) -> String {
    let mut report: Value = serde_json::from_str(&out.stdout).unwrap();
    for result in report["results"].as_array_mut().unwrap() {
        if result.get("id").is_some() {
            result["id"] = json!("[ID]");
        }
    }
    serde_json::to_string_pretty(&report).unwrap()
}

fn import_ndjson_and_csv(deployment: &Deployment, store: &str) {
    let template = "sk_{secret:32:base62}";
    let client_secret = deployment.create_app(&["--name", "Legacy", "--label", "legacy", "--template", template]);
    let keys = keys_and_digests(deployment, template, 5);
    let lines = [
        json!({"hash": {"algorithm": "sha256", "value": keys[0].1}, "owner_id": "user_1", "name": "Digest", "last4": &keys[0].0[31..]}).to_string(),
        "not json".to_owned(),
        json!({"key": keys[1].0, "owner_id": "user_2", "scopes": ["read"]}).to_string(),
        String::new(),
        json!({"key": "sk_short"}).to_string(),
        json!({"hash": {"algorithm": "md5", "value": "x"}}).to_string(),
    ];
    let file = temp_file("keys.ndjson", &lines.join("\n"));

    // A dry run checks every line and stores nothing.
    let dry = deployment.cli(&["keys", "import", "--app", "legacy", path_str(&file), "--dry-run"]);
    dry.assert_code(1);
    insta::assert_snapshot!("import_dry_run", summary(&dry));
    assert_eq!(deployment.cli(&["keys", "list", "--app", "legacy"]).lines().len(), 1, "a dry run stores nothing");

    let imported = deployment.cli(&["keys", "import", "--app", "legacy", path_str(&file), "--json"]);
    imported.assert_code(1);
    insta::assert_snapshot!("import_ndjson", summary(&imported));
    insta::assert_snapshot!("import_ndjson_report", report(&imported));

    // Again: every key is already there, nothing changes.
    let again = deployment.cli(&["keys", "import", "--app", "legacy", path_str(&file)]);
    again.assert_code(1);
    assert!(again.stderr.contains("imported 0 keys, 2 already there, 3 refused"), "{again:#?}");

    // CSV from stdin: the hash's fields as hash.* columns, scopes separated by spaces.
    let csv = format!(
        "hash.algorithm,hash.value,owner_id,scopes,metadata,remaining,enabled\n\
         sha256,{},user_3,read write,\"{{\"\"plan\"\": \"\"pro\"\"}}\",100,\n\
         sha256,{},user_4,,,,false\n\
         sha256,{},user_5,,,lots,\n",
        keys[2].1, keys[3].1, keys[4].1
    );
    let out = deployment.cli_with_stdin(&["keys", "import", "--app", "legacy", "--format", "csv"], &csv);
    out.assert_code(1);
    insta::assert_snapshot!("import_csv", summary(&out));
    let bad_column =
        deployment.cli_with_stdin(&["keys", "import", "--app", "legacy", "--format", "csv"], "key_id\nx\n");
    bad_column.assert_error("the CSV column \"key_id\" is not an item field");

    let listed = deployment.cli(&["keys", "list", "--app", "legacy", "--json"]);
    listed.assert_code(0);
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    let owners: Vec<&str> = listed["keys"].as_array().unwrap().iter().filter_map(|k| k["owner_id"].as_str()).collect();
    assert_eq!(owners.len(), 4, "{listed}");
    let user_3 = listed["keys"].as_array().unwrap().iter().find(|k| k["owner_id"] == "user_3").unwrap();
    assert_eq!(user_3["scopes"], json!(["read", "write"]));
    assert_eq!(user_3["metadata"], json!({"plan": "pro"}));
    assert_eq!(user_3["remaining"], json!(100));

    let server = deployment.serve();
    let codes: Vec<String> = keys.iter().map(|(key, _)| server.verify(&client_secret, key)).collect();
    assert_eq!(codes, ["VALID", "VALID", "VALID", "DISABLED", "NOT_FOUND"], "{store}");
}

#[test]
fn keys_import_from_ndjson_and_csv_on_sqlite_reports_bad_lines_by_number_and_the_others_verify() {
    import_ndjson_and_csv(&Deployment::sqlite("key-import"), "sqlite");
}

#[test]
fn keys_import_from_ndjson_and_csv_on_postgres_reports_bad_lines_by_number_and_the_others_verify() {
    let Some(deployment) = Deployment::postgres() else { return };
    import_ndjson_and_csv(&deployment, "postgres");
}

#[test]
fn keys_exported_from_sqlite_and_imported_into_postgres_verify_there() {
    let Some(target) = Deployment::postgres() else { return };
    let source = Deployment::sqlite("key-export");
    let kota = "kota_{tier}_{id:12:base32}_{secret:36:hex}";
    let app = |d: &Deployment| {
        d.create_app(&[
            "--name",
            "Kota",
            "--label",
            "kota",
            "--template",
            kota,
            "--tier",
            "free",
            "--default-tier",
            "free",
        ])
    };
    app(&source);
    let target_secret = app(&target);

    // Keys made here (SHA-256, found by id), and a kota key imported as its id and the
    // bcrypt of its secret alone.
    let made: Vec<String> = (0..3)
        .map(|i| {
            let out = source.cli(&["keys", "create", "--app", "kota", "--owner", &format!("user_{i}")]);
            out.assert_code(0);
            out.stdout.trim_end().to_owned()
        })
        .collect();
    let old = source.cli(&["generate", "--template", kota, "--tier", "free"]).stdout.trim_end().to_owned();
    let parts: Vec<&str> = old.split('_').collect();
    let bcrypt = source.cli(&["hash", "--algorithm", "bcrypt", parts[3]]);
    bcrypt.assert_code(0);
    let item = json!({"id": parts[2], "hash": {"algorithm": "bcrypt", "covers": "secret", "value": bcrypt.stdout.trim_end()}, "owner_id": "legacy", "tier": "free"});
    source.cli_with_stdin(&["keys", "import", "--app", "kota"], &item.to_string()).assert_code(0);
    let revoked = source.cli(&["keys", "create", "--app", "kota", "--json"]);
    let revoked: Value = serde_json::from_str(&revoked.stdout).unwrap();
    source.cli(&["keys", "revoke", revoked["record"]["id"].as_str().unwrap()]).assert_code(0);

    let exported = source.cli(&["keys", "export", "--app", "kota"]);
    exported.assert_code(0);
    assert_eq!(exported.lines().len(), 4, "the active keys, not the revoked one: {exported:#?}");
    assert!(!exported.stdout.contains(&made[0]) && !exported.stdout.contains(&old), "never a key");
    let legacy: Value = exported
        .lines()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|i| i["owner_id"] == "legacy")
        .unwrap();
    assert_eq!(legacy["id"], parts[2]);
    assert_eq!(legacy["hash"]["covers"], "secret");
    assert_eq!(exported.stderr, "keypal: exported 4 keys of kota\n");

    let dir = scratch_dir("key-export-file");
    let file = dir.join("kota.ndjson");
    std::fs::write(&file, &exported.stdout).unwrap();
    let imported = target.cli(&["keys", "import", "--app", "kota", path_str(&file)]);
    imported.assert_code(0);
    assert!(
        imported.stderr.starts_with("keypal: imported 4 keys, 0 already there, 0 refused; 4 items in "),
        "{imported:#?}"
    );
    let server = target.serve();
    for key in made.iter().chain([&old]) {
        assert_eq!(server.verify(&target_secret, key), "VALID", "{key}");
    }
    assert_eq!(server.verify(&target_secret, revoked["key"].as_str().unwrap()), "NOT_FOUND");
}
