//! The recipes of docs/MIGRATING.md, each run as written: the application the recipe
//! creates, the CSV or NDJSON its query or filter gives (built here from the same rows),
//! `keypal keys import`, and every old key verified by a running `keypal serve`, beside a
//! key made by keypal for the same application.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Deployment, Server};
use serde_json::{Value, json};

/// Imports `text` (`--format` `format`) into application `label`, expecting every item in.
fn import(deployment: &Deployment, label: &str, format: &str, text: &str, items: usize) {
    let out = deployment.cli_with_stdin(&["keys", "import", "--app", label, "--format", format, "-"], text);
    out.assert_code(0);
    let want = format!("keypal: imported {items} keys, 0 already there, 0 refused;");
    assert!(out.stderr.starts_with(&want), "{out:#?}");
}

/// A new key of application `label`, made by keypal.
fn new_key(deployment: &Deployment, label: &str, args: &[&str]) -> String {
    let mut all = vec!["keys", "create", "--app", label];
    all.extend_from_slice(args);
    let out = deployment.cli(&all);
    out.assert_code(0);
    out.stdout.trim_end().to_owned()
}

/// Verifies `keys` and a new key with `server`, all expected `VALID`.
fn all_valid(server: &Server, client_secret: &str, keys: &[String]) {
    let codes: Vec<String> = keys.iter().map(|key| server.verify(client_secret, key)).collect();
    assert_eq!(codes, vec!["VALID"; keys.len()], "{keys:?}");
}

fn hash(deployment: &Deployment, algorithm: &str, data: &str) -> String {
    let out = deployment.cli(&["hash", "--algorithm", algorithm, data]);
    out.assert_code(0);
    out.stdout.trim_end().to_owned()
}

#[test]
fn recipe_tiered_bare_keys_verify_beside_new_sprint_keys() {
    let deployment = Deployment::sqlite("recipe-sprint");
    let secret = deployment.create_app(&[
        "--name",
        "Sprint",
        "--label",
        "sprint",
        "--template",
        "sprint-{tier}_{secret:43:base64url}",
        "--legacy-template",
        "{secret:43:base64url}",
        "--tier",
        "free",
        "--tier",
        "pro",
        "--tier",
        "ent",
        "--tier",
        "entplus",
        "--default-tier",
        "free",
    ]);
    // The old system's rows: a bare key's SHA-256 (hex), its tier and its owner.
    let bare: Vec<String> = (0..3)
        .map(|_| deployment.cli(&["generate", "--template", "{secret:43:base64url}"]).stdout.trim_end().to_owned())
        .collect();
    let mut csv = String::from("hash.algorithm,hash.value,tier,owner_id\n");
    for (i, (key, tier)) in bare.iter().zip(["free", "pro", "entplus"]).enumerate() {
        let digest = hash(&deployment, "sha256", key);
        csv.push_str(&format!("sha256,{},{tier},customer_{i}\n", digest.strip_prefix("$sha256$").unwrap()));
    }
    import(&deployment, "sprint", "csv", &csv, 3);
    let fresh = new_key(&deployment, "sprint", &["--tier", "pro"]);
    assert!(fresh.starts_with("sprint-pro_"), "{fresh}");
    let server = deployment.serve();
    all_valid(&server, &secret, &[bare.clone(), vec![fresh]].concat());
    let listed = deployment.cli(&["keys", "list", "--app", "sprint", "--json"]);
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    let tiers: Vec<&str> = listed["keys"].as_array().unwrap().iter().filter_map(|k| k["tier"].as_str()).collect();
    assert_eq!(tiers, ["pro", "entplus", "pro", "free"], "newest first, each key with its tier");
}

#[test]
fn recipe_per_user_bcrypt_keys_are_found_by_their_twelve_character_prefix() {
    let deployment = Deployment::sqlite("recipe-brdnv");
    let secret = deployment.create_app(&[
        "--name",
        "Boardnova",
        "--label",
        "brdnv",
        "--template",
        "brdnv_sk_{secret:32:alnum}",
        "--max-active-keys-per-owner",
        "10",
    ]);
    // The old rows: the bcrypt of the whole key, its first 12 characters, the user, the name.
    let old: Vec<String> = (0..2)
        .map(|_| deployment.cli(&["generate", "--template", "brdnv_sk_{secret:32:alnum}"]).stdout.trim_end().to_owned())
        .collect();
    let mut csv = String::from("hash.algorithm,hash.value,hint,owner_id,name,created_at\n");
    for (i, key) in old.iter().enumerate() {
        let bcrypt = hash(&deployment, "bcrypt", key);
        csv.push_str(&format!("bcrypt,{bcrypt},{},user_{i},\"Laptop, home\",2025-02-01T10:00:00Z\n", &key[..12]));
    }
    import(&deployment, "brdnv", "csv", &csv, 2);
    let fresh = new_key(&deployment, "brdnv", &["--owner", "user_0"]);
    let server = deployment.serve();
    all_valid(&server, &secret, &[old.clone(), vec![fresh]].concat());
    // The first verification re-hashed the key under the application's policy: it still verifies.
    all_valid(&server, &secret, &old);
}

#[test]
fn recipe_kota_rows_import_as_id_and_bcrypt_of_the_secret() {
    let deployment = Deployment::sqlite("recipe-kota");
    let template = "kota_{tier}_{id:12:base32}_{secret:36:hex}";
    let secret = deployment.create_app(&[
        "--name",
        "Kota",
        "--label",
        "kota",
        "--template",
        template,
        "--tier",
        "free=100/hour",
        "--tier",
        "solo=1000/hour",
        "--tier",
        "team=10000/hour",
        "--default-tier",
        "free",
    ]);
    // The old table: {key_id, secret_hash, tier, user_id}, the hash of the secret segment alone.
    let old: Vec<String> = ["free", "team"]
        .iter()
        .map(|tier| deployment.cli(&["generate", "--template", template, "--tier", tier]).stdout.trim_end().to_owned())
        .collect();
    let mut csv = String::from("id,hash.algorithm,hash.covers,hash.value,tier,owner_id\n");
    for (i, key) in old.iter().enumerate() {
        let parts: Vec<&str> = key.split('_').collect();
        let bcrypt = hash(&deployment, "bcrypt", parts[3]);
        csv.push_str(&format!("{},bcrypt,secret,{bcrypt},{},user_{i}\n", parts[2], parts[1]));
    }
    import(&deployment, "kota", "csv", &csv, 2);
    let fresh = new_key(&deployment, "kota", &["--tier", "solo"]);
    let server = deployment.serve();
    all_valid(&server, &secret, &[old.clone(), vec![fresh]].concat());
    all_valid(&server, &secret, &old);
}

/// The NDJSON item of a TypeScript keypal record, as the recipe's filter makes it; `None`
/// for a revoked record.
fn ts_keypal_item(row: &Value, algorithm: &str) -> Option<Value> {
    let meta = &row["metadata"];
    if !meta["revokedAt"].is_null() {
        return None;
    }
    let mut item = json!({
        "hash": {"algorithm": algorithm, "value": row["keyHash"]},
        "created_at": meta["createdAt"],
        "enabled": meta["enabled"],
        "metadata": {"keypal_ts_id": row["id"]},
    });
    for (from, to) in
        [("name", "name"), ("scopes", "scopes"), ("expiresAt", "expires_at"), ("lastUsedAt", "last_used_at")]
    {
        if !meta[from].is_null() {
            item[to] = meta[from].clone();
        }
    }
    if meta["ownerId"].as_str().is_some_and(|owner| !owner.is_empty()) {
        item["owner_id"] = meta["ownerId"].clone();
    }
    Some(item)
}

#[test]
fn recipe_typescript_keypal_records_without_salt_import_and_verify() {
    let fixture: Value =
        serde_json::from_str(include_str!("../../../fixtures/migrating/ts-keypal-records.json")).unwrap();
    let deployment = Deployment::sqlite("recipe-ts-keypal");
    // The TypeScript keypal's defaults: no prefix, 32 characters of A-Za-z0-9, SHA-256 in hex.
    let secret = deployment.create_app(&["--name", "TS", "--label", "ts", "--template", "{secret:32:alnum}"]);
    let keys: Vec<&Value> = fixture["keys"].as_array().unwrap().iter().filter(|k| k["config"] == "defaults").collect();
    assert!(!keys.is_empty());
    let lines: Vec<String> =
        keys.iter().filter_map(|k| ts_keypal_item(&k["row"], "sha256")).map(|item| item.to_string()).collect();
    import(&deployment, "ts", "ndjson", &lines.join("\n"), lines.len());
    let server = deployment.serve();
    let old: Vec<String> = keys.iter().map(|k| k["plaintext"].as_str().unwrap().to_owned()).collect();
    all_valid(&server, &secret, &old);

    // With the package's `salt` option, a record's hash cannot be found without the
    // key's first characters, which the package does not store: refused, line by line.
    let salted = fixture["keys"].as_array().unwrap().iter().find(|k| k["config"] == "prefix and salt").unwrap();
    let mut item = ts_keypal_item(&salted["row"], "sha256").unwrap();
    item["hash"]["salt"] = json!("fixture-salt-2024");
    let out = deployment.cli_with_stdin(&["keys", "import", "--app", "ts", "-"], &item.to_string());
    out.assert_code(1);
    assert!(out.stderr.contains("line 1: [INVALID_INPUT] hint:"), "{out:#?}");
}

#[test]
fn recipe_better_auth_apikey_rows_import_and_verify() {
    let fixture: Value =
        serde_json::from_str(include_str!("../../../fixtures/migrating/better-auth-apikey.json")).unwrap();
    let deployment = Deployment::sqlite("recipe-better-auth");
    let secret = deployment.create_app(&[
        "--name",
        "Better Auth",
        "--label",
        "ba",
        "--template",
        "ba_live_{secret:64:alnum}",
        "--legacy-template",
        "{secret:64:alnum}",
        "--legacy-template",
        "ba_test_{secret:64:alnum}",
        "--legacy-template",
        "ba_old_{secret:64:alnum}",
    ]);
    // The rows as `SELECT ... FROM apikey` gives them to the recipe's CSV, past expiries left out.
    let now = time::OffsetDateTime::now_utc();
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let mut csv = String::from(
        "hash.algorithm,hash.encoding,hash.value,owner_id,name,metadata,created_at,last_used_at,expires_at,enabled,remaining\n",
    );
    let keys = fixture["keys"].as_array().unwrap();
    for k in keys {
        let row = &k["row"];
        let text = |field: &str| row[field].as_str().unwrap_or("").to_owned();
        let metadata = row["metadata"].as_str().filter(|m| *m != "null").unwrap_or("").replace('"', "\"\"");
        let expires = row["expiresAt"].as_str().filter(|at| time::OffsetDateTime::parse(at, rfc3339).unwrap() > now);
        let remaining = row["remaining"].as_u64().map(|n| n.to_string()).unwrap_or_default();
        let enabled = if row["enabled"] == 1 { "true" } else { "false" };
        csv.push_str(&format!(
            "sha256,base64url,{},{},{},\"{metadata}\",{},{},{},{enabled},{remaining}\n",
            text("key"),
            text("referenceId"),
            text("name"),
            text("createdAt"),
            text("lastRequest"),
            expires.unwrap_or("")
        ));
    }
    import(&deployment, "ba", "csv", &csv, keys.len());
    let server = deployment.serve();
    for k in keys {
        let want = if k["row"]["enabled"] == 1 { "VALID" } else { "DISABLED" };
        assert_eq!(server.verify(&secret, k["plaintext"].as_str().unwrap()), want, "{}", k["label"]);
    }
}
