//! Every endpoint over a real socket, on SQLite and on PostgreSQL.

// Test helpers assert by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{Db, TestServer, json_of};
use keypal_server::secrets::Secrets;
use keypal_server::{Deployment, DeploymentError, ServeConfig, Server};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

common::on_both!(
    applications_keys_and_verification_end_to_end,
    rotation_and_revocation_take_effect_before_the_call_returns,
    owners_manage_their_own_keys_with_the_client_secret,
    owner_limit_is_exact_under_64_concurrent_creates,
    a_label_is_taken_once_under_concurrent_creates_and_freed_by_delete,
    recoverable_keys_can_be_revealed_and_others_cannot,
    recoverable_can_be_turned_on_later_and_off_deleting_the_sealed_copies,
    tiers_rate_limit_and_credits_show_in_the_verdict,
    refills_are_set_by_tier_create_and_patch_and_show_in_views_and_verdicts,
    credits_are_set_incremented_and_decremented_and_audited,
    client_secret_and_service_key_rotation_stop_the_old_ones_at_once,
    deleting_an_application_revokes_its_keys,
    application_and_service_key_changes_are_audited,
    graceful_shutdown_flushes_last_used_and_a_restart_keeps_everything,
    active_keys_leave_out_expired_keys_and_keys_in_a_rotation_grace,
    another_master_key_on_the_same_database_refuses_to_start,
    processes_starting_together_agree_on_one_master_key,
    changing_an_applications_hash_keeps_every_key_verifying,
    a_refusal_reports_the_credits_the_store_holds,
    legacy_formats_verify_beside_new_keys_until_they_are_removed,
    a_management_token_manages_keypal_and_is_audited_by_its_name,
    revoked_and_expired_management_tokens_are_refused,
    a_management_token_is_taken_by_exactly_the_operations_documenting_it,
    imported_keys_verify_and_each_item_stands_alone,
    better_auth_rows_import_and_their_plaintext_keys_verify,
    a_kota_key_imports_as_its_id_and_the_bcrypt_of_its_secret,
    owner_limits_apply_to_imports_unless_skipped,
    an_ndjson_import_of_thousands_of_lines_reports_bad_lines_by_number,
);

async fn server(db: Db) -> TestServer {
    let mut server = TestServer::start(db).await;
    server.login().await;
    server
}

async fn applications_keys_and_verification_end_to_end(db: Db) {
    let server = server(db).await;
    let (app, secret) = server
        .create_app(json!({"name": "Billing API", "label": "billing", "default_metadata": {"plan": "team"}}))
        .await;
    assert!(secret.starts_with("cs-"));
    let app_id = app["id"].as_str().unwrap();
    let public_id = app["public_id"].as_str().unwrap();
    assert!(public_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{public_id}");
    assert_eq!(app["template"], "sk-proj-{app}-{label}-{secret:32:base64url}");

    let (key, record) =
        server.create_key(app_id, json!({"name": "CI", "owner_id": "user_1", "scopes": ["read", "billing:*"]})).await;
    assert!(key.starts_with(&format!("sk-proj-{public_id}-billing-")), "{key}");
    assert_eq!(record["metadata"], json!({"plan": "team"}), "the app's default metadata");
    assert_eq!(record["app_id"], app_id);
    let masked = record["masked"].as_str().unwrap();
    assert!(masked.contains('…') && masked.ends_with(&key[key.len() - 4..]), "{masked}");
    assert!(!record.to_string().contains(&key), "a record never shows the key");

    let v = server.verify(&key, &secret, json!({"scopes": ["billing:read"]})).await;
    assert_eq!((v["valid"].as_bool(), v["code"].as_str()), (Some(true), Some("VALID")), "{v}");
    assert_eq!(v["app"]["id"], app_id);
    assert_eq!(v["key"]["owner_id"], "user_1");
    assert_eq!(v["key"]["metadata"], json!({"plan": "team"}));
    assert_eq!(server.verify(&key, &secret, json!({"scopes": ["admin"]})).await["code"], "INSUFFICIENT_SCOPE");
    assert_eq!(server.verify("not a key", &secret, json!({})).await["code"], "MALFORMED");

    // A key of another application is NOT_FOUND there.
    let (_, other_secret) = server.create_app(json!({"name": "Other", "label": "other"})).await;
    let v = server.verify(&key, &other_secret, json!({})).await;
    assert_eq!(v["code"], "NOT_FOUND", "{v}");

    // Metadata can be a plain string.
    let (_, plain) = server.create_key(app_id, json!({"metadata": "just a note"})).await;
    assert_eq!(plain["metadata"], "just a note");

    // Listing, newest first, with owner filter and paging.
    let (status, list) =
        json_of(server.admin(Method::GET, &format!("/v1/apps/{app_id}/keys")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["keys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [plain["id"].as_str().unwrap(), record["id"].as_str().unwrap()], "newest first");
    let url = format!("/v1/apps/{app_id}/keys?owner_id=user_1&limit=1");
    let (_, owned) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
    assert_eq!(owned["keys"].as_array().unwrap().len(), 1);
    assert_eq!(owned["next_cursor"], Value::Null);
    let (_, page) =
        json_of(server.admin(Method::GET, &format!("/v1/apps/{app_id}/keys?limit=1")).send().await.unwrap()).await;
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let url = format!("/v1/apps/{app_id}/keys?limit=1&cursor={cursor}");
    let (_, second) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
    assert_eq!(second["keys"][0]["id"], record["id"]);

    // Get and patch.
    let key_id = record["id"].as_str().unwrap();
    let (status, got) = json_of(server.admin(Method::GET, &format!("/v1/keys/{key_id}")).send().await.unwrap()).await;
    assert_eq!((status, &got["name"]), (StatusCode::OK, &json!("CI")));
    let patch = json!({"name": "CI deploys", "scopes": ["read"], "enabled": false, "metadata": {"team": "infra"}});
    let (status, patched) =
        json_of(server.admin(Method::PATCH, &format!("/v1/keys/{key_id}")).json(&patch).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (&patched["name"], &patched["enabled"], &patched["scopes"]),
        (&json!("CI deploys"), &json!(false), &json!(["read"]))
    );
    assert_eq!(server.verify(&key, &secret, json!({})).await["code"], "DISABLED", "disabled at once");
    let enable = json!({"enabled": true, "expires_at": null, "remaining": null});
    server.admin(Method::PATCH, &format!("/v1/keys/{key_id}")).json(&enable).send().await.unwrap();
    assert_eq!(server.verify(&key, &secret, json!({})).await["code"], "VALID");

    // Apps list with counts; audit log.
    let (_, apps) = json_of(server.admin(Method::GET, "/v1/apps").send().await.unwrap()).await;
    let billing = apps["apps"].as_array().unwrap().iter().find(|a| a["id"] == app_id).unwrap();
    assert_eq!((billing["active_keys"].as_u64(), billing["total_keys"].as_u64()), (Some(2), Some(2)));
    let url = format!("/v1/audit?app_id={app_id}&key_id={key_id}");
    let (status, audit) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let actions: Vec<&str> =
        audit["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["enabled", "updated", "disabled", "updated", "created"], "newest first: {audit}");
    assert_eq!(audit["events"][0]["actor"], "admin");
    assert_eq!(audit["events"][0]["ip"], "127.0.0.1");

    // Delete.
    let response = server.admin(Method::DELETE, &format!("/v1/keys/{key_id}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = server.admin(Method::GET, &format!("/v1/keys/{key_id}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.verify(&key, &secret, json!({})).await["code"], "NOT_FOUND");
    server.stop().await;
}

async fn active_keys_leave_out_expired_keys_and_keys_in_a_rotation_grace(db: Db) {
    let server = server(db).await;
    let (app, _) = server.create_app(json!({"name": "A", "label": "a"})).await;
    let app_id = app["id"].as_str().unwrap();
    server.create_key(app_id, json!({"owner_id": "u"})).await;
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    server.create_key(app_id, json!({"owner_id": "u", "expires_at": soon})).await;
    let (_, rotated) = server.create_key(app_id, json!({"owner_id": "u"})).await;
    let url = format!("/v1/keys/{}/rotate", rotated["id"].as_str().unwrap());
    let (status, body) =
        json_of(server.admin(Method::POST, &url).json(&json!({"grace_seconds": 3600})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // Four keys: one plain, one expired, one in its grace window, its successor.
    let (_, view) = json_of(server.admin(Method::GET, &format!("/v1/apps/{app_id}")).send().await.unwrap()).await;
    assert_eq!((view["app"]["active_keys"].as_u64(), view["app"]["total_keys"].as_u64()), (Some(2), Some(4)), "{view}");
    let (_, apps) = json_of(server.admin(Method::GET, "/v1/apps").send().await.unwrap()).await;
    assert_eq!(apps["apps"][0]["active_keys"], 2, "{apps}");
}

async fn rotation_and_revocation_take_effect_before_the_call_returns(db: Db) {
    let server = server(db).await;
    let (app, secret) = server.create_app(json!({"name": "A", "label": "a"})).await;
    let app_id = app["id"].as_str().unwrap();
    let (old, record) = server.create_key(app_id, json!({"owner_id": "u", "metadata": {"m": 1}})).await;
    let id = record["id"].as_str().unwrap();
    // Cached as valid first.
    assert_eq!(server.verify(&old, &secret, json!({})).await["code"], "VALID");

    let (status, rotated) =
        json_of(server.admin(Method::POST, &format!("/v1/keys/{id}/rotate")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["key"].as_str().unwrap();
    assert_eq!(rotated["record"]["metadata"], json!({"m": 1}), "same metadata");
    assert_eq!(rotated["record"]["rotated_from"], id);
    assert_eq!(server.verify(&old, &secret, json!({})).await["code"], "REVOKED", "the old key is refused at once");
    assert_eq!(server.verify(new, &secret, json!({})).await["code"], "VALID");

    // With a grace period the old key keeps working.
    let new_id = rotated["record"]["id"].as_str().unwrap();
    let url = format!("/v1/keys/{new_id}/rotate");
    let (status, newer) =
        json_of(server.admin(Method::POST, &url).json(&json!({"grace_seconds": 3600})).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{newer}");
    assert_eq!(server.verify(new, &secret, json!({})).await["code"], "VALID", "inside its grace window");
    let newest = newer["key"].as_str().unwrap();
    let newest_id = newer["record"]["id"].as_str().unwrap();

    // Revoke: refused at once, metadata removed, record kept; twice is 409.
    assert_eq!(server.verify(newest, &secret, json!({})).await["code"], "VALID");
    let (status, revoked) =
        json_of(server.admin(Method::POST, &format!("/v1/keys/{newest_id}/revoke")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["metadata"], Value::Null, "revocation removes the metadata");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(server.verify(newest, &secret, json!({})).await["code"], "REVOKED");
    let (status, again) =
        json_of(server.admin(Method::POST, &format!("/v1/keys/{newest_id}/revoke")).send().await.unwrap()).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("ALREADY_REVOKED")));
    let (status, _) = json_of(server.admin(Method::GET, &format!("/v1/keys/{newest_id}")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "the record stays for the audit log");
    server.stop().await;
}

async fn owners_manage_their_own_keys_with_the_client_secret(db: Db) {
    let server = server(db).await;
    let (app, secret) = server.create_app(json!({"name": "A", "label": "a", "default_metadata": {"d": true}})).await;
    let create = |owner: &str, body: Value| {
        server.anon(Method::POST, &format!("/v1/owners/{owner}/keys")).bearer_auth(&secret).json(&body).send()
    };
    let (status, created) =
        json_of(create("alice", json!({"name": "  laptop  ", "expires_in_days": 30})).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["record"]["name"], "laptop", "trimmed");
    assert_eq!(created["record"]["owner_id"], "alice");
    assert_eq!(created["record"]["metadata"], json!({"d": true}));
    assert!(created["record"]["expires_at"].is_string());
    let key = created["key"].as_str().unwrap();
    assert_eq!(server.verify(key, &secret, json!({})).await["code"], "VALID");
    let (_, bob) = json_of(create("bob", json!({"name": "ci"})).await.unwrap()).await;

    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "x".repeat(101)}),
        json!({"name": "a", "expires_in_days": 0}),
        json!({"name": "a", "expires_in_days": 366}),
        json!({"name": "a", "expires_in_days": 1.5}),
    ] {
        let (status, body) = json_of(create("alice", bad.clone()).await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
    }

    let (status, listed) =
        json_of(server.anon(Method::GET, "/v1/owners/alice/keys").bearer_auth(&secret).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let owners: Vec<&str> =
        listed["keys"].as_array().unwrap().iter().map(|k| k["owner_id"].as_str().unwrap()).collect();
    assert_eq!(owners, ["alice"], "that owner's keys only");

    let alice_key = created["record"]["id"].as_str().unwrap();
    let bob_key = bob["record"]["id"].as_str().unwrap();
    let revoke = |owner: &str, key: &str| {
        server.anon(Method::POST, &format!("/v1/owners/{owner}/keys/{key}/revoke")).bearer_auth(&secret).send()
    };
    assert_eq!(revoke("alice", bob_key).await.unwrap().status(), StatusCode::FORBIDDEN, "another owner's key");
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(revoke("alice", &unknown).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(revoke("alice", "not-a-uuid").await.unwrap().status(), StatusCode::BAD_REQUEST, "not a key id");
    assert_eq!(revoke("alice", alice_key).await.unwrap().status(), StatusCode::OK);
    assert_eq!(server.verify(key, &secret, json!({})).await["code"], "REVOKED");

    // The owner's revoked keys are listed when asked for, a page at a time like every list.
    let (_, phone) = json_of(create("alice", json!({"name": "phone"})).await.unwrap()).await;
    let list =
        |query: &str| server.anon(Method::GET, &format!("/v1/owners/alice/keys{query}")).bearer_auth(&secret).send();
    let ids = |page: &Value| -> Vec<String> {
        page["keys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap().to_owned()).collect()
    };
    let phone_key = phone["record"]["id"].as_str().unwrap();
    let (_, active) = json_of(list("").await.unwrap()).await;
    assert_eq!(ids(&active), [phone_key], "revoked keys are left out by default");
    let (status, first) = json_of(list("?include_revoked=true&limit=1").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(ids(&first), [phone_key], "newest first");
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let (_, second) = json_of(list(&format!("?include_revoked=true&limit=1&cursor={cursor}")).await.unwrap()).await;
    assert_eq!(ids(&second), [alice_key], "the revoked key");
    assert!(second["keys"][0]["revoked_at"].is_string());
    assert_eq!(list("?limit=0").await.unwrap().status(), StatusCode::BAD_REQUEST);

    // Missing or wrong client secret: 401.
    let response = server.anon(Method::GET, "/v1/owners/alice/keys").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = server.anon(Method::GET, "/v1/owners/alice/keys").bearer_auth("cs-wrong").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Another app's keys are invisible.
    let (_, other) = server.create_app(json!({"name": "B", "label": "b"})).await;
    let url = format!("/v1/owners/bob/keys/{bob_key}/revoke");
    let response = server.anon(Method::POST, &url).bearer_auth(&other).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let _ = app;
    server.stop().await;
}

async fn owner_limit_is_exact_under_64_concurrent_creates(db: Db) {
    let server = Arc::new(server(db).await);
    let (_, secret) = server.create_app(json!({"name": "A", "label": "a", "max_active_keys_per_owner": 10})).await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let server = server.clone();
            let secret = secret.clone();
            tokio::spawn(async move {
                let response = server
                    .anon(Method::POST, "/v1/owners/carol/keys")
                    .bearer_auth(&secret)
                    .json(&json!({"name": format!("key {i}")}))
                    .send()
                    .await
                    .unwrap();
                json_of(response).await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN => assert_eq!(body["error"]["code"], "KEY_LIMIT_REACHED", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 10, "exactly the limit");
    let (_, listed) =
        json_of(server.anon(Method::GET, "/v1/owners/carol/keys").bearer_auth(&secret).send().await.unwrap()).await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 10);
    if let Ok(server) = Arc::try_unwrap(server) {
        server.stop().await;
    }
}

async fn a_label_is_taken_once_under_concurrent_creates_and_freed_by_delete(db: Db) {
    let server = Arc::new(server(db).await);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                let body = json!({"name": format!("App {i}"), "label": "same"});
                json_of(server.admin(Method::POST, "/v1/apps").json(&body).send().await.unwrap()).await
            })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => created.push(body["app"]["id"].as_str().unwrap().to_owned()),
            StatusCode::CONFLICT => assert_eq!(body["error"]["code"], "LABEL_TAKEN", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created.len(), 1, "one application per label");
    let (_, apps) = json_of(server.admin(Method::GET, "/v1/apps").send().await.unwrap()).await;
    assert_eq!(apps["apps"].as_array().unwrap().iter().filter(|a| a["label"] == "same").count(), 1);
    // Deleting the application frees its label.
    let delete = format!("/v1/apps/{}", created[0]);
    let response = server.admin(Method::DELETE, &delete).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.create_app(json!({"name": "Again", "label": "same"})).await;
    // A late second delete of the first application (a double submit, another
    // instance) finds nothing, and leaves the new holder's claim alone.
    let response = server.admin(Method::DELETE, &delete).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (status, body) = json_of(
        server.admin(Method::POST, "/v1/apps").json(&json!({"name": "Third", "label": "same"})).send().await.unwrap(),
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::CONFLICT, &json!("LABEL_TAKEN")), "{body}");
    if let Ok(server) = Arc::try_unwrap(server) {
        server.stop().await;
    }
}

async fn recoverable_keys_can_be_revealed_and_others_cannot(db: Db) {
    let server = server(db).await;
    let (app, _) = server.create_app(json!({"name": "R", "label": "r", "recoverable": true})).await;
    let (key, record) = server.create_key(app["id"].as_str().unwrap(), json!({})).await;
    let url = format!("/v1/keys/{}/reveal", record["id"].as_str().unwrap());
    let (status, revealed) = json_of(server.admin(Method::POST, &url).send().await.unwrap()).await;
    assert_eq!((status, revealed["key"].as_str()), (StatusCode::OK, Some(key.as_str())));

    let (plain_app, _) = server.create_app(json!({"name": "P", "label": "p"})).await;
    let (_, record) = server.create_key(plain_app["id"].as_str().unwrap(), json!({})).await;
    let url = format!("/v1/keys/{}/reveal", record["id"].as_str().unwrap());
    let (status, body) = json_of(server.admin(Method::POST, &url).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("NOT_RECOVERABLE")));
    server.stop().await;
}

async fn recoverable_can_be_turned_on_later_and_off_deleting_the_sealed_copies(db: Db) {
    let server = server(db).await;
    let (app, _) = server.create_app(json!({"name": "P", "label": "p"})).await;
    let app_id = app["id"].as_str().unwrap();
    let reveal = |id: &str| {
        let url = format!("/v1/keys/{id}/reveal");
        let request = server.admin(Method::POST, &url);
        async move { json_of(request.send().await.unwrap()).await }
    };
    let patch = |body: Value| {
        let request = server.admin(Method::PATCH, &format!("/v1/apps/{app_id}")).json(&body);
        async move { json_of(request.send().await.unwrap()).await }
    };
    let (_, before) = server.create_key(app_id, json!({})).await;
    let before = before["id"].as_str().unwrap().to_owned();

    // On: keys created or rotated from now on are kept; keys from before are not.
    let (status, body) = patch(json!({"recoverable": true})).await;
    assert_eq!((status, &body["app"]["recoverable"]), (StatusCode::OK, &json!(true)), "{body}");
    let (key, record) = server.create_key(app_id, json!({})).await;
    let after = record["id"].as_str().unwrap().to_owned();
    assert_eq!(reveal(&after).await.1["key"].as_str(), Some(key.as_str()));
    assert_eq!(reveal(&before).await.1["error"]["code"], "NOT_RECOVERABLE");
    let url = format!("/v1/keys/{before}/rotate");
    let (_, rotated) = json_of(server.admin(Method::POST, &url).send().await.unwrap()).await;
    let successor = rotated["record"]["id"].as_str().unwrap().to_owned();
    assert_eq!(reveal(&successor).await.1["key"], rotated["key"]);

    // Off: the sealed copies are deleted, and audited with their number.
    let (status, body) = patch(json!({"recoverable": false})).await;
    assert_eq!((status, &body["app"]["recoverable"]), (StatusCode::OK, &json!(false)), "{body}");
    let (status, body) = reveal(&after).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("NOT_RECOVERABLE")));
    let url = format!("/v1/audit?app_id={app_id}&action=app_updated");
    let (_, audit) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
    assert_eq!(
        audit["events"][0]["details"],
        json!({"fields": ["recoverable"], "sealed_copies_deleted": 2}),
        "{audit}"
    );
    // Deleted, not hidden: turning it on again brings no old copy back.
    patch(json!({"recoverable": true})).await;
    assert_eq!(reveal(&after).await.1["error"]["code"], "NOT_RECOVERABLE");
    assert_eq!(reveal(&successor).await.1["error"]["code"], "NOT_RECOVERABLE");
    server.stop().await;
}

async fn tiers_rate_limit_and_credits_show_in_the_verdict(db: Db) {
    let server = server(db).await;
    let (app, secret) = server
        .create_app(json!({
            "name": "Tiered", "label": "tiered",
            "template": "kota_{tier}_{id:12:base32}_{secret:36:hex}",
            "tiers": {"free": {"rate_limit": "2/minute"}, "pro": {"segment": "pro", "rate_limit": "1000/hour"}},
            "default_tier": "free",
        }))
        .await;
    let app_id = app["id"].as_str().unwrap();
    let (key, _) = server.create_key(app_id, json!({})).await;
    assert!(key.starts_with("kota_free_"), "{key}");
    let first = server.verify(&key, &secret, json!({})).await;
    assert_eq!(first["ratelimit"]["limit"], 2, "{first}");
    assert_eq!(first["ratelimit"]["remaining"], 1);
    assert_eq!(server.verify(&key, &secret, json!({})).await["code"], "VALID");
    let third = server.verify(&key, &secret, json!({})).await;
    assert_eq!((third["valid"].as_bool(), third["code"].as_str()), (Some(false), Some("RATE_LIMITED")), "{third}");
    assert!(third["message"].is_string());
    // A change to the application rebuilds its manager (here at once, and again when
    // the bus brings the announcement back): the key's window goes on, not a new one.
    let url = format!("/v1/apps/{app_id}");
    let renamed = server.admin(Method::PATCH, &url).json(&json!({"name": "Tiered, renamed"})).send().await.unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let after_change = server.verify(&key, &secret, json!({})).await;
    assert_eq!(after_change["code"], "RATE_LIMITED", "{after_change}");

    let (pro, _) = server.create_key(app_id, json!({"tier": "pro", "remaining": 2})).await;
    assert!(pro.starts_with("kota_pro_"));
    assert_eq!(server.verify(&pro, &secret, json!({})).await["remaining"], 1);
    let v = server.verify(&pro, &secret, json!({"cost": 5})).await;
    assert_eq!((v["code"].as_str(), v["remaining"].as_u64()), (Some("USAGE_EXCEEDED"), Some(1)));
    let unknown_tier =
        server.admin(Method::POST, &format!("/v1/apps/{app_id}/keys")).json(&json!({"tier": "gold"})).send();
    let (status, body) = json_of(unknown_tier.await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    server.stop().await;
}

/// The hash of an application changes between any two of the five algorithms (the
/// same one included): keys created before verify after, re-stored under the new hash
/// by that verify (so they verify again through a manager with an empty cache), and
/// new keys verify. An application created with `bcrypt_cost` can change its hash.
async fn changing_an_applications_hash_keeps_every_key_verifying(db: Db) {
    let server = server(db).await;
    let hashes = ["sha256", "sha512", "hmac-sha256", "argon2id", "bcrypt"];
    for from in hashes {
        for to in hashes {
            let pair = format!("{from} -> {to}");
            let mut body = json!({"name": pair, "label": format!("{from}-to-{to}")});
            body["hash"] = json!(from);
            if from == "bcrypt" {
                body["bcrypt_cost"] = json!(10);
            }
            let (app, secret) = server.create_app(body).await;
            let app_id = app["id"].as_str().unwrap();
            let (old_key, _) = server.create_key(app_id, json!({"name": "before"})).await;
            assert_eq!(server.verify(&old_key, &secret, json!({})).await["code"], "VALID", "{pair}");

            let url = format!("/v1/apps/{app_id}");
            let (status, patched) =
                json_of(server.admin(Method::PATCH, &url).json(&json!({"hash": to})).send().await.unwrap()).await;
            assert_eq!(status, StatusCode::OK, "{pair}: {patched}");
            assert_eq!(patched["app"]["hash"], to, "{pair}");
            let cost = if from == "bcrypt" && to == "bcrypt" { json!(10) } else { Value::Null };
            assert_eq!(patched["app"]["bcrypt_cost"], cost, "{pair}: a cost belongs to bcrypt");

            let v = server.verify(&old_key, &secret, json!({})).await;
            assert_eq!(v["code"], "VALID", "{pair}: a key created before the change: {v}");
            let (new_key, _) = server.create_key(app_id, json!({"name": "after"})).await;
            assert_eq!(server.verify(&new_key, &secret, json!({})).await["code"], "VALID", "{pair}: a new key");

            // A change of name rebuilds the application's manager: nothing cached, so the
            // old key is found where its first verify under the new hash put it.
            let rename = json!({"name": format!("{pair} (renamed)")});
            let (status, _) = json_of(server.admin(Method::PATCH, &url).json(&rename).send().await.unwrap()).await;
            assert_eq!(status, StatusCode::OK, "{pair}");
            for (key, what) in [(&old_key, "the old key"), (&new_key, "the new key")] {
                let v = server.verify(key, &secret, json!({})).await;
                assert_eq!(v["code"], "VALID", "{pair}: {what}, re-read from the database: {v}");
            }
        }
    }
    // A cost sent with another hash is still refused, naming it.
    let (app, _) = server.create_app(json!({"name": "Costly", "label": "costly", "hash": "bcrypt"})).await;
    let url = format!("/v1/apps/{}", app["id"].as_str().unwrap());
    let body = json!({"hash": "sha256", "bcrypt_cost": 12});
    let (status, refused) = json_of(server.admin(Method::PATCH, &url).json(&body).send().await.unwrap()).await;
    assert_eq!((status, &refused["error"]["field"]), (StatusCode::BAD_REQUEST, &json!("bcrypt_cost")), "{refused}");
    server.stop().await;
}

/// The tiered system's move (docs/SERVER.md, "Earlier key formats"): its bare 43-character
/// base64url keys keep verifying beside its new `sprint-{tier}_…` keys while the bare
/// format is one of the application's `legacy_templates`, and stop once it is removed.
async fn legacy_formats_verify_beside_new_keys_until_they_are_removed(db: Db) {
    const BARE: &str = "{secret:43:base64url}";
    let server = server(db).await;
    let (app, secret) = server.create_app(json!({"name": "Sprint", "label": "sprint", "template": BARE})).await;
    assert_eq!(app["legacy_templates"], json!([]), "{app}");
    let app_id = app["id"].as_str().unwrap();
    let url = format!("/v1/apps/{app_id}");
    let (bare_key, _) = server.create_key(app_id, json!({"name": "before the tiers"})).await;
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    assert!(bare_key.len() == 43 && bare_key.bytes().all(base64url), "{bare_key}");

    let patch = json!({
        "template": "sprint-{tier}_{secret:43:base64url}",
        "tiers": {"free": {}, "pro": {}, "ent": {}, "entplus": {}},
        "default_tier": "free",
        "legacy_templates": [BARE],
    });
    let (status, patched) = json_of(server.admin(Method::PATCH, &url).json(&patch).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["app"]["legacy_templates"], json!([BARE]), "{patched}");
    let (status, shown) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
    assert_eq!((status, &shown["app"]["legacy_templates"]), (StatusCode::OK, &json!([BARE])), "{shown}");

    let (pro_key, _) = server.create_key(app_id, json!({"name": "after", "tier": "pro"})).await;
    let prefix = "sprint-pro_";
    assert!(pro_key.starts_with(prefix) && pro_key.len() == prefix.len() + 43, "{pro_key}");
    let (free_key, _) = server.create_key(app_id, json!({"name": "default tier"})).await;
    let prefix = "sprint-free_";
    assert!(free_key.starts_with(prefix) && free_key.len() == prefix.len() + 43, "{free_key}");
    for key in [&bare_key, &pro_key, &free_key] {
        let v = server.verify(key, &secret, json!({})).await;
        assert_eq!(v["code"], "VALID", "{key}: {v}");
    }

    // Without the legacy format, the bare key is no key of the application's.
    let (status, patched) =
        json_of(server.admin(Method::PATCH, &url).json(&json!({"legacy_templates": []})).send().await.unwrap()).await;
    assert_eq!((status, &patched["app"]["legacy_templates"]), (StatusCode::OK, &json!([])), "{patched}");
    let v = server.verify(&bare_key, &secret, json!({})).await;
    assert_eq!(v["code"], "MALFORMED", "the bare key, its format removed: {v}");
    let v = server.verify(&pro_key, &secret, json!({})).await;
    assert_eq!(v["code"], "VALID", "a new key: {v}");

    // Put back, the bare key verifies again (it was never revoked).
    let (status, patched) =
        json_of(server.admin(Method::PATCH, &url).json(&json!({"legacy_templates": [BARE]})).send().await.unwrap())
            .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let v = server.verify(&bare_key, &secret, json!({})).await;
    assert_eq!(v["code"], "VALID", "the bare key, its format back: {v}");
    server.stop().await;
}

/// The first day of the month after now, 00:00 UTC, as RFC 3339.
fn next_first_of_month() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    let (year, month) = if today.month() == time::Month::December {
        (today.year() + 1, 1)
    } else {
        (today.year(), today.month() as u8 + 1)
    };
    format!("{year:04}-{month:02}-01T00:00:00Z")
}

async fn refills_are_set_by_tier_create_and_patch_and_show_in_views_and_verdicts(db: Db) {
    let server = server(db).await;
    let (app, secret) = server
        .create_app(json!({
            "name": "Quotas", "label": "quotas",
            "tiers": {"free": {"refill": {"interval": "monthly", "amount": 3}}, "pro": {}},
        }))
        .await;
    let app_id = app["id"].as_str().unwrap();
    assert_eq!(app["tiers"]["free"]["refill"], json!({"interval": "monthly", "amount": 3}), "{app}");

    // The tier's refill is the default of its keys.
    let (free, record) = server.create_key(app_id, json!({"tier": "free"})).await;
    assert_eq!((&record["remaining"], &record["refill"]), (&json!(3), &json!({"interval": "monthly", "amount": 3})));
    assert_eq!(record["refill_at"], next_first_of_month(), "{record}");
    let v = server.verify(&free, &secret, json!({})).await;
    assert_eq!((v["code"].as_str(), v["remaining"].as_u64()), (Some("VALID"), Some(2)), "{v}");
    assert_eq!(v["refill_at"], next_first_of_month());

    // A key's own refill; a day of the month only with `monthly`.
    let body = json!({"tier": "pro", "refill": {"interval": "12h", "amount": 10}, "remaining": 4});
    let (pro, record) = server.create_key(app_id, body).await;
    assert_eq!((&record["remaining"], &record["refill"]["interval"]), (&json!(4), &json!("12h")));
    let bad = json!({"refill": {"interval": "daily", "day": 3, "amount": 10}});
    let (status, body) =
        json_of(server.admin(Method::POST, &format!("/v1/apps/{app_id}/keys")).json(&bad).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_INPUT")), "{body}");

    // PATCH sets a refill (starting a period with full credits) and `null` removes it.
    let id = record["id"].as_str().unwrap();
    let patch = json!({"refill": {"interval": "monthly", "day": 31, "amount": 50}});
    let (status, patched) =
        json_of(server.admin(Method::PATCH, &format!("/v1/keys/{id}")).json(&patch).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!((&patched["remaining"], &patched["refill"]["day"]), (&json!(50), &json!(31)));
    assert_eq!(server.verify(&pro, &secret, json!({"cost": 5})).await["remaining"], 45);
    let (_, removed) = json_of(
        server.admin(Method::PATCH, &format!("/v1/keys/{id}")).json(&json!({"refill": null})).send().await.unwrap(),
    )
    .await;
    assert_eq!(
        (&removed["refill"], &removed["refill_at"], &removed["remaining"]),
        (&Value::Null, &Value::Null, &json!(45))
    );
    let v = server.verify(&pro, &secret, json!({})).await;
    assert!(v.get("refill_at").is_none(), "no refill, no refill_at: {v}");
    server.stop().await;
}

async fn credits_are_set_incremented_and_decremented_and_audited(db: Db) {
    let server = server(db).await;
    let (app, secret) = server.create_app(json!({"name": "Credits", "label": "credits"})).await;
    let app_id = app["id"].as_str().unwrap();
    let (key, record) = server.create_key(app_id, json!({"remaining": 10})).await;
    let id = record["id"].as_str().unwrap();
    let credits = |body: Value| {
        let request = server.admin(Method::POST, &format!("/v1/keys/{id}/credits")).json(&body).send();
        async move { json_of(request.await.unwrap()).await }
    };
    for (body, left) in [
        (json!({"op": "increment", "amount": 5}), 15),
        (json!({"op": "decrement", "amount": 3}), 12),
        (json!({"op": "decrement", "amount": 100}), 0),
        (json!({"op": "set", "amount": 7}), 7),
    ] {
        let (status, changed) = credits(body.clone()).await;
        assert_eq!((status, &changed["remaining"]), (StatusCode::OK, &json!(left)), "{body}: {changed}");
    }
    assert_eq!(server.verify(&key, &secret, json!({})).await["remaining"], 6, "spends see the change at once");
    let (status, body) = credits(json!({"op": "double", "amount": 5})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let url = format!("/v1/audit?key_id={id}&action=credits_changed");
    let (_, audit) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events.len(), 4, "{audit}");
    assert_eq!(events[0]["details"], json!({"op": "set", "amount": 7}));

    // A key with unlimited credits can be set, not incremented; a revoked key not at all.
    let (_, unlimited) = server.create_key(app_id, json!({})).await;
    let url = format!("/v1/keys/{}/credits", unlimited["id"].as_str().unwrap());
    let response = server.admin(Method::POST, &url).json(&json!({"op": "increment", "amount": 1})).send();
    let (status, body) = json_of(response.await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_INPUT")), "{body}");
    server.admin(Method::POST, &format!("/v1/keys/{id}/revoke")).send().await.unwrap();
    let (status, body) = credits(json!({"op": "set", "amount": 1})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("ALREADY_REVOKED")), "{body}");
    server.stop().await;
}

/// A refusal judged on a cached record (here `RATE_LIMITED`) reports the credits the
/// database holds, not the ones the record was cached with.
async fn a_refusal_reports_the_credits_the_store_holds(db: Db) {
    let server = server(db).await;
    let (app, secret) = server.create_app(json!({"name": "Metered", "label": "metered"})).await;
    let app_id = app["id"].as_str().unwrap();
    let (key, _) = server.create_key(app_id, json!({"remaining": 150, "rate_limit": "1/minute"})).await;
    let spent = server.verify(&key, &secret, json!({"cost": 100})).await;
    assert_eq!((spent["code"].as_str(), spent["remaining"].as_u64()), (Some("VALID"), Some(50)), "{spent}");
    let limited = server.verify(&key, &secret, json!({})).await;
    assert_eq!(limited["code"], "RATE_LIMITED", "{limited}");
    assert_eq!(limited["remaining"], 50, "the credits the database holds: {limited}");
    server.stop().await;
}

async fn client_secret_and_service_key_rotation_stop_the_old_ones_at_once(db: Db) {
    let mut server = server(db).await;
    let (app, old_secret) = server.create_app(json!({"name": "A", "label": "a"})).await;
    let app_id = app["id"].as_str().unwrap();
    let (key, _) = server.create_key(app_id, json!({})).await;
    let (status, body) =
        json_of(server.admin(Method::POST, &format!("/v1/apps/{app_id}/client-secret")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let new_secret = body["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    let response = server
        .anon(Method::POST, "/v1/verify")
        .bearer_auth(&server.service_key)
        .json(&json!({"key": key, "client_secret": old_secret}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("INVALID_CLIENT_SECRET")));
    assert_eq!(server.verify(&key, &new_secret, json!({})).await["code"], "VALID");

    let (status, shown) = json_of(server.admin(Method::GET, "/v1/service-key").send().await.unwrap()).await;
    assert_eq!((status, shown["service_key"].as_str()), (StatusCode::OK, Some(server.service_key.as_str())));
    let (status, rotated) = json_of(server.admin(Method::POST, "/v1/service-key/rotate").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let old_service_key =
        std::mem::replace(&mut server.service_key, rotated["service_key"].as_str().unwrap().to_owned());
    let response = server
        .anon(Method::POST, "/v1/verify")
        .bearer_auth(&old_service_key)
        .json(&json!({"key": key, "client_secret": new_secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "the old service key stops at once");
    assert_eq!(server.verify(&key, &new_secret, json!({})).await["code"], "VALID");
    server.stop().await;
}

async fn deleting_an_application_revokes_its_keys(db: Db) {
    let server = server(db).await;
    let (app, secret) = server.create_app(json!({"name": "Gone", "label": "gone"})).await;
    let app_id = app["id"].as_str().unwrap();
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(server.create_key(app_id, json!({})).await);
    }
    let (status, body) =
        json_of(server.admin(Method::DELETE, &format!("/v1/apps/{app_id}")).send().await.unwrap()).await;
    assert_eq!((status, body["revoked_keys"].as_u64()), (StatusCode::OK, Some(3)), "{body}");
    let response = server.admin(Method::GET, &format!("/v1/apps/{app_id}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = server
        .anon(Method::POST, "/v1/verify")
        .bearer_auth(&server.service_key)
        .json(&json!({"key": keys[0].0, "client_secret": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "its client secret is gone");
    let url = format!("/v1/audit?app_id={app_id}&action=revoked");
    let (_, audit) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
    assert_eq!(audit["events"].as_array().unwrap().len(), 3, "each revocation is audited");
    server.stop().await;
}

async fn application_and_service_key_changes_are_audited(db: Db) {
    let server = server(db).await;
    let (app, _) = server.create_app(json!({"name": "Audited", "label": "audited"})).await;
    let app_id = app["id"].as_str().unwrap();
    let patch = json!({"name": "Audited too", "max_active_keys_per_owner": 3});
    let response = server.admin(Method::PATCH, &format!("/v1/apps/{app_id}")).json(&patch).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = server.admin(Method::POST, &format!("/v1/apps/{app_id}/client-secret")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.create_key(app_id, json!({})).await;
    let response = server.admin(Method::DELETE, &format!("/v1/apps/{app_id}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = server.admin(Method::POST, "/v1/service-key/rotate").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let (status, audit) =
        json_of(server.admin(Method::GET, &format!("/v1/audit?app_id={app_id}")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let events = audit["events"].as_array().unwrap();
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["app_deleted", "revoked", "created", "client_secret_rotated", "app_updated", "app_created"]);
    for event in events {
        assert_eq!((event["actor"].as_str(), event["app_id"].as_str()), (Some("admin"), Some(app_id)), "{event}");
    }
    assert_eq!(events[0]["details"], json!({"revoked_keys": 1}));
    assert_eq!(events[4]["details"], json!({"fields": ["name", "max_active_keys_per_owner"]}));
    assert_eq!(events[5]["details"], json!({"name": "Audited", "label": "audited"}));
    assert!(events[3]["details"].is_null() && events[3]["key_id"].is_null(), "no secret, no key: {}", events[3]);

    let (_, rotated) =
        json_of(server.admin(Method::GET, "/v1/audit?action=service_key_rotated").send().await.unwrap()).await;
    let rotated = rotated["events"].as_array().unwrap();
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!((rotated[0]["actor"].as_str(), &rotated[0]["app_id"]), (Some("admin"), &Value::Null));
    server.stop().await;
}

async fn graceful_shutdown_flushes_last_used_and_a_restart_keeps_everything(db: Db) {
    let server = server(db).await;
    let config = server.config.clone();
    let (app, secret) = server.create_app(json!({"name": "A", "label": "a"})).await;
    let (key, record) = server.create_key(app["id"].as_str().unwrap(), json!({})).await;
    assert_eq!(record["last_used_at"], Value::Null);
    assert_eq!(server.verify(&key, &secret, json!({})).await["code"], "VALID");
    // A second key's use waits for the next batched write, and then a change to the
    // application rebuilds its manager: the use noted by the one before is written
    // all the same.
    let (second_key, second) = server.create_key(app["id"].as_str().unwrap(), json!({})).await;
    assert_eq!(server.verify(&second_key, &secret, json!({})).await["code"], "VALID");
    let url = format!("/v1/apps/{}", app["id"].as_str().unwrap());
    let renamed = server.admin(Method::PATCH, &url).json(&json!({"name": "A, renamed"})).send().await.unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let (admin_password, service_key) = (server.admin_password.clone(), server.service_key.clone());
    server.stop().await;

    // Same database and key file: nothing is generated again, everything still works.
    let mut restarted = TestServer::start_with({
        let mut c = config;
        c.admin_password = Some(admin_password);
        c.service_key = Some(service_key);
        c
    })
    .await;
    restarted.login().await;
    let url = format!("/v1/keys/{}", record["id"].as_str().unwrap());
    let (_, after) = json_of(restarted.admin(Method::GET, &url).send().await.unwrap()).await;
    assert!(after["last_used_at"].is_string(), "the shutdown flushed last_used_at: {after}");
    let url = format!("/v1/keys/{}", second["id"].as_str().unwrap());
    let (_, after) = json_of(restarted.admin(Method::GET, &url).send().await.unwrap()).await;
    assert!(after["last_used_at"].is_string(), "the rebuilt manager's predecessor wrote its notes: {after}");
    assert_eq!(
        restarted.verify(&key, &secret, json!({})).await["code"],
        "VALID",
        "the client secret survives a restart"
    );
    restarted.stop().await;
}

#[tokio::test]
async fn sessions_are_required_throttled_and_end_on_logout() {
    let mut server = TestServer::start(Db::Sqlite).await;
    for path in ["/v1/apps", "/v1/service-key", "/v1/audit", "/v1/keys/0190a0f2-7c4e-7d2a-9b1e-3f5c2a9d8e71"] {
        let (status, body) = json_of(server.anon(Method::GET, path).send().await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")),
            "{path}"
        );
    }
    server.login().await;
    let response = server.admin(Method::GET, "/v1/apps").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = server.anon(Method::POST, "/v1/session").json(&json!({"password": "x"})).send().await.unwrap();
    let cookie_less = response.headers().get("set-cookie").is_none();
    assert_eq!((response.status(), cookie_less), (StatusCode::UNAUTHORIZED, true));

    // Logout ends the session server-side: the old cookie no longer works.
    let response = server.admin(Method::DELETE, "/v1/session").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = server.admin(Method::GET, "/v1/apps").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Repeated failures from one address: 429 with Retry-After, even for the right password.
    for _ in 0..4 {
        let response =
            server.anon(Method::POST, "/v1/session").json(&json!({"password": "wrong"})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let response = server
        .anon(Method::POST, "/v1/session")
        .json(&json!({"password": server.admin_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().get("retry-after").is_some());
    server.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_same_site_strict() {
    let server = TestServer::start(Db::Sqlite).await;
    let response = server
        .anon(Method::POST, "/v1/session")
        .json(&json!({"password": server.admin_password}))
        .send()
        .await
        .unwrap();
    let cookie = response.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP on loopback");
    let response = server
        .anon(Method::POST, "/v1/session")
        .header("x-forwarded-proto", "https")
        .json(&json!({"password": server.admin_password}))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("set-cookie").unwrap().to_str().unwrap().contains("Secure"), "Secure behind TLS");
    server.stop().await;
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let mut server = TestServer::start(Db::Sqlite).await;
    let response = server.anon(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!((response.status(), response.text().await.unwrap().as_str()), (StatusCode::OK, "ok"));

    server.login().await;
    let (app, secret) = server.create_app(json!({"name": "A", "label": "a"})).await;
    let (key, _) = server.create_key(app["id"].as_str().unwrap(), json!({})).await;
    server.verify(&key, &secret, json!({})).await;
    server.verify("sk-proj-nope", &secret, json!({})).await;
    let metrics = server.anon(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("keypal_verifications_total{code=\"VALID\"} 1"), "{metrics}");
    assert!(metrics.contains("keypal_verifications_total{code=\"MALFORMED\"} 1"), "{metrics}");
    assert!(metrics.contains("keypal_verify_duration_seconds_count 2"), "{metrics}");

    let (status, doc) = json_of(server.anon(Method::GET, "/openapi.json").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/v1/verify", "/v1/apps", "/v1/apps/{id}/keys", "/v1/keys/{id}/rotate", "/v1/owners/{owner_id}/keys"] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    server.stop().await;
}

#[tokio::test]
async fn generated_secrets_are_printed_once_and_kept() {
    let config = common::config(Db::Sqlite);
    let first = TestServer::start_with(config.clone()).await;
    let (password, service_key) = (first.admin_password.clone(), first.service_key.clone());
    first.stop().await;
    let server = keypal_server::Server::bind(&config).await.unwrap();
    assert!(server.generated().admin_password.is_none() && server.generated().service_key.is_none(), "generated once");
    drop(server);
    let mut again = TestServer::start_with({
        let mut c = config;
        c.admin_password = Some(password);
        c.service_key = Some(service_key.clone());
        c
    })
    .await;
    again.login().await;
    let (_, shown) = json_of(again.admin(Method::GET, "/v1/service-key").send().await.unwrap()).await;
    assert_eq!(shown["service_key"], service_key.as_str());
    again.stop().await;
}

/// `config` with the master key `byte` repeated, as 64 hex characters.
fn with_master_key(config: &ServeConfig, byte: u8) -> ServeConfig {
    let mut config = config.clone();
    config.master_key = Some(format!("{byte:02x}").repeat(32));
    config
}

/// Why `config` cannot start a server (panics when it starts).
async fn refusal(config: &ServeConfig) -> keypal_server::ServeError {
    match Server::bind(config).await {
        Ok(_) => panic!("the server started"),
        Err(e) => e,
    }
}

async fn another_master_key_on_the_same_database_refuses_to_start(db: Db) {
    let config = with_master_key(&common::config(db), 0x11);
    let mut first = TestServer::start_with(config.clone()).await;
    first.login().await;
    let (app, secret) = first.create_app(json!({"name": "A", "label": "a", "hash": "hmac-sha256"})).await;
    let (key, _) = first.create_key(app["id"].as_str().unwrap(), json!({})).await;

    // A second instance with another master key, while the first runs: refused at once,
    // with the problem and the fix in the message.
    let error = refusal(&with_master_key(&config, 0x22)).await;
    assert_eq!(error.code(), "MASTER_KEY_MISMATCH", "{error}");
    let message = error.to_string();
    assert!(message.contains("does not match") && message.contains("set KEYPAL_MASTER_KEY"), "{message}");

    // No master key and no key file: missing, and no new key file is made for a database in use.
    let mut unset = config.clone();
    unset.master_key = None;
    let error = refusal(&unset).await;
    assert_eq!(error.code(), "MASTER_KEY_MISSING", "{error}");
    assert!(error.to_string().contains("KEYPAL_MASTER_KEY"), "{error}");
    assert!(!unset.key_file.exists(), "no key file was created");
    // A key file holding another key: the message names the file.
    std::fs::write(&unset.key_file, "33".repeat(32)).unwrap();
    let error = refusal(&unset).await;
    assert_eq!(error.code(), "MASTER_KEY_MISMATCH", "{error}");
    assert!(error.to_string().contains(&unset.key_file.display().to_string()), "{error}");

    // The same key starts a second instance, which serves what the first made.
    let mut same = config.clone();
    same.admin_password = Some(first.admin_password.clone());
    let second = TestServer::join(same, &first.service_key).await;
    assert_eq!(second.verify(&key, &secret, json!({})).await["code"], "VALID");
    second.stop().await;
    first.stop().await;

    // What the database holds is the check value, never the key nor anything derived for another purpose.
    let deployment = Deployment::open(&config).await.unwrap();
    let stored = deployment.store.get_object("setting", "master_key_check").await.unwrap().expect("recorded");
    let secrets = Secrets::from_master_key(&[0x11; 32]);
    assert_eq!(stored.body["check"], secrets.check_value());
    let text = stored.body.to_string();
    let base64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, [0x11; 32]);
    for secret in ["11".repeat(32), base64, secrets.pepper()] {
        assert!(!text.contains(&secret), "{text}");
    }
    deployment.store.close().await;
}

async fn processes_starting_together_agree_on_one_master_key(db: Db) {
    let config = common::config(db);
    // The tables exist; no process has recorded its master key yet.
    let mut options = keypal_sql::SqlOptions::new();
    options.schema.clone_from(&config.database_schema);
    keypal_sql::SqlStore::connect_with(&config.database_url, &options).await.unwrap().close().await;

    let opens = (1..=6u8).map(|byte| {
        let config = with_master_key(&config, byte);
        tokio::spawn(async move { Deployment::open(&config).await })
    });
    let mut opened = 0;
    for open in futures::future::join_all(opens).await {
        match open.unwrap() {
            Ok(deployment) => {
                opened += 1;
                deployment.store.close().await;
            }
            Err(DeploymentError::MasterKeyMismatch { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(opened, 1, "exactly one master key is recorded; every other one is refused");
}

#[tokio::test]
async fn a_database_from_before_check_values_is_checked_by_its_sealed_service_key() {
    let config = with_master_key(&common::config(Db::Sqlite), 0x44);
    TestServer::start_with(config.clone()).await.stop().await;
    // Take the check value away, as in a database of an older version.
    let deployment = Deployment::open(&config).await.unwrap();
    let check = deployment.store.get_object("setting", "master_key_check").await.unwrap().unwrap();
    let gone = keypal_sql::ObjectRef { kind: "setting", id: "master_key_check", body: Some(&check.body) };
    deployment.store.delete_objects(&[gone], None).await.unwrap();
    deployment.store.close().await;

    let error = refusal(&with_master_key(&config, 0x55)).await;
    assert_eq!(error.code(), "MASTER_KEY_MISMATCH", "{error}");
    let deployment = Deployment::open(&config).await.expect("its own key opens it, and records the check");
    assert!(deployment.store.get_object("setting", "master_key_check").await.unwrap().is_some());
    deployment.store.close().await;
    assert_eq!(refusal(&with_master_key(&config, 0x55)).await.code(), "MASTER_KEY_MISMATCH");
}

#[tokio::test]
async fn a_service_key_set_by_the_environment_cannot_be_rotated() {
    let mut config = common::config(Db::Sqlite);
    config.service_key = Some("kp_svc_set_by_the_environment_0123456789abc".to_owned());
    let mut server = TestServer::start_with(config).await;
    server.login().await;
    let (status, body) = json_of(server.admin(Method::POST, "/v1/service-key/rotate").send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("SERVICE_KEY_PINNED")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("KEYPAL_SERVICE_KEY"), "{body}");

    // Nothing changed: the configured key still verifies, no rotation is audited.
    let (_, shown) = json_of(server.admin(Method::GET, "/v1/service-key").send().await.unwrap()).await;
    assert_eq!(shown["service_key"], server.service_key.as_str());
    let (app, secret) = server.create_app(json!({"name": "A", "label": "a"})).await;
    let (key, _) = server.create_key(app["id"].as_str().unwrap(), json!({})).await;
    assert_eq!(server.verify(&key, &secret, json!({})).await["code"], "VALID");
    let (_, audit) =
        json_of(server.admin(Method::GET, "/v1/audit?action=service_key_rotated").send().await.unwrap()).await;
    assert_eq!(audit["events"], json!([]), "{audit}");
    server.stop().await;
}

#[tokio::test]
async fn a_new_service_key_in_the_environment_replaces_the_stored_one_audited() {
    let config = common::config(Db::Sqlite);
    let first = TestServer::start_with(config.clone()).await;
    let (generated, password) = (first.service_key.clone(), first.admin_password.clone());
    first.stop().await;

    let mut server = TestServer::start_with({
        let mut c = config;
        c.admin_password = Some(password);
        c.service_key = Some("kp_svc_set_by_the_environment_0123456789abc".to_owned());
        c
    })
    .await;
    server.login().await;
    let response = server
        .anon(Method::POST, "/v1/verify")
        .bearer_auth(&generated)
        .json(&json!({"key": "sk-nothing", "client_secret": "cs-nothing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "the generated key gave way to the configured one");
    let (_, audit) =
        json_of(server.admin(Method::GET, "/v1/audit?action=service_key_rotated").send().await.unwrap()).await;
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{audit}");
    assert_eq!(events[0]["actor"], "system");
    server.stop().await;
}

/// `POST /v1/tokens` as admin; returns (token, record).
async fn create_token(server: &TestServer, body: Value) -> (String, Value) {
    let (status, created) = json_of(server.admin(Method::POST, "/v1/tokens").json(&body).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (created["token"].as_str().unwrap().to_owned(), created["record"].clone())
}

/// A request bearing a management token, and no cookie.
fn with_token(server: &TestServer, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    server.anon(method, path).bearer_auth(token)
}

async fn a_management_token_manages_keypal_and_is_audited_by_its_name(db: Db) {
    let server = server(db).await;
    let (token, record) = create_token(&server, json!({"name": "ci", "expires_in_days": 30})).await;
    assert!(token.starts_with("kp_mgmt_") && token.len() == "kp_mgmt_".len() + 40, "{token}");
    assert_eq!(record["name"], "ci");
    assert_eq!(record["last_used_at"], Value::Null);
    let expires = time::OffsetDateTime::parse(
        record["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let in_30_days = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    assert!((expires - in_30_days).abs() < time::Duration::minutes(1), "{record}");

    // The management API, with the token alone: no cookie, no Origin check.
    let (status, app) = json_of(
        with_token(&server, &token, Method::POST, "/v1/apps")
            .header("origin", "https://ci.example")
            .json(&json!({"name": "Scripted", "label": "scripted"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    let app_id = app["app"]["id"].as_str().unwrap();
    let url = format!("/v1/apps/{app_id}/keys");
    let (status, key) =
        json_of(with_token(&server, &token, Method::POST, &url).json(&json!({"owner_id": "u"})).send().await.unwrap())
            .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let key_id = key["record"]["id"].as_str().unwrap();
    let url = format!("/v1/keys/{key_id}/revoke");
    let (status, _) = json_of(with_token(&server, &token, Method::POST, &url).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);

    // Audited with the token's name as the actor.
    let url = format!("/v1/audit?app_id={app_id}");
    let (status, audit) = json_of(with_token(&server, &token, Method::GET, &url).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let events: Vec<(&str, &str)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(events, [("revoked", "token:ci"), ("created", "token:ci"), ("app_created", "token:ci")], "{audit}");

    // Tokens manage tokens; the service key stays the session's.
    let (status, other) = json_of(
        with_token(&server, &token, Method::POST, "/v1/tokens").json(&json!({"name": "deploy"})).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    assert_eq!(other["record"]["expires_at"], Value::Null, "no expiry unless asked");
    let (status, body) =
        json_of(with_token(&server, &token, Method::GET, "/v1/service-key").send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")));

    // Listed with their last use; never the token.
    let (status, list) = json_of(server.admin(Method::GET, "/v1/tokens").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let names: Vec<&str> = list["tokens"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ci", "deploy"], "oldest first");
    let ci = &list["tokens"][0];
    assert_eq!((&ci["id"], &ci["created_at"]), (&record["id"], &record["created_at"]));
    assert!(ci["last_used_at"].is_string(), "{ci}");
    assert_eq!(list["tokens"][1]["last_used_at"], Value::Null);
    let other_token = other["token"].as_str().unwrap();
    for shown in [&list, &audit] {
        assert!(!shown.to_string().contains(&token) && !shown.to_string().contains(other_token), "{shown}");
    }
    // Nor anywhere in the database: only its keyed digest.
    let deployment = Deployment::open(&server.config).await.unwrap();
    for kind in [keypal_server::tokens::KIND, "mgmt_token_name", "setting", "session"] {
        for object in deployment.store.list_objects(kind).await.unwrap() {
            let stored = format!("{} {:?} {}", object.id, object.lookup, object.body);
            assert!(!stored.contains(&token) && !stored.contains(&token["kp_mgmt_".len()..]), "{stored}");
        }
    }
    deployment.store.close().await;

    // One live token per name.
    let (status, taken) =
        json_of(server.admin(Method::POST, "/v1/tokens").json(&json!({"name": "ci"})).send().await.unwrap()).await;
    assert_eq!((status, taken["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("TOKEN_NAME_TAKEN")), "{taken}");

    // Making and revoking tokens is audited, naming the token (never showing it); a
    // refused creation is not.
    let url = format!("/v1/tokens/{}", other["record"]["id"].as_str().unwrap());
    let response = server.admin(Method::DELETE, &url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let mut made = Vec::new();
    for action in ["token_created", "token_revoked"] {
        let url = format!("/v1/audit?action={action}");
        let (status, audit) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        assert!(!audit.to_string().contains(other_token), "{audit}");
        for event in audit["events"].as_array().unwrap() {
            made.push((action, event["actor"].as_str().unwrap().to_owned(), event["details"]["name"].clone()));
        }
    }
    assert_eq!(
        made,
        [
            ("token_created", "token:ci".to_owned(), json!("deploy")),
            ("token_created", "admin".to_owned(), json!("ci")),
            ("token_revoked", "admin".to_owned(), json!("deploy")),
        ]
    );
    server.stop().await;
}

async fn revoked_and_expired_management_tokens_are_refused(db: Db) {
    let server = server(db).await;
    let (token, record) = create_token(&server, json!({"name": "ci"})).await;
    let id = record["id"].as_str().unwrap();
    let (status, _) = json_of(with_token(&server, &token, Method::GET, "/v1/apps").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);

    // Revoked (here by itself): refused on its next request; its name is free again.
    let url = format!("/v1/tokens/{id}");
    let response = with_token(&server, &token, Method::DELETE, &url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, body) = json_of(with_token(&server, &token, Method::GET, "/v1/apps").send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")), "{body}");
    let (status, body) = json_of(server.admin(Method::DELETE, &url).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")), "{body}");
    let (_, list) = json_of(server.admin(Method::GET, "/v1/tokens").send().await.unwrap()).await;
    assert_eq!(list["tokens"], json!([]), "a revoked token is gone from the list");
    let (again, _) = create_token(&server, json!({"name": "ci"})).await;

    // Expired (its expiry moved into the past in the database): refused with its own code.
    let (expiring, record) = create_token(&server, json!({"name": "nightly", "expires_in_days": 1})).await;
    let deployment = Deployment::open(&server.config).await.unwrap();
    let id = record["id"].as_str().unwrap();
    let mut stored = deployment.store.get_object(keypal_server::tokens::KIND, id).await.unwrap().unwrap();
    stored.body["expires_at"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() - 1);
    assert!(deployment.store.update_object(keypal_server::tokens::KIND, id, &stored.body, None).await.unwrap());
    deployment.store.close().await;
    let (status, body) = json_of(with_token(&server, &expiring, Method::GET, "/v1/audit").send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("TOKEN_EXPIRED")), "{body}");
    let (_, list) = json_of(server.admin(Method::GET, "/v1/tokens").send().await.unwrap()).await;
    assert_eq!(list["tokens"][1]["name"], "nightly", "an expired token is listed until revoked: {list}");

    // Neither counts as a session; the new token with the old name works.
    for wrong in [token.as_str(), expiring.as_str(), "kp_mgmt_made-up", "not-a-token"] {
        let (status, _) = json_of(
            with_token(&server, wrong, Method::POST, "/v1/tokens").json(&json!({"name": "x"})).send().await.unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let (status, _) = json_of(with_token(&server, &again, Method::GET, "/v1/tokens").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

/// The document's `management_token` requirements are the truth: each operation that
/// lists it takes a token, and every other one refuses it.
async fn a_management_token_is_taken_by_exactly_the_operations_documenting_it(db: Db) {
    use utoipa::OpenApi;
    let server = server(db).await;
    let (token, _) = create_token(&server, json!({"name": "probe"})).await;
    let document = serde_json::to_value(keypal_server::ApiDoc::openapi()).unwrap();
    let mut taking = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let schemes: Vec<&str> = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r.as_object().unwrap().keys().map(String::as_str))
                .collect();
            let documented = schemes.contains(&"management_token");
            if documented {
                taking.push(operation["operationId"].as_str().unwrap().to_owned());
            }
            if schemes.is_empty() || schemes == ["admin_session"] && !documented && path.starts_with("/v1/session") {
                continue;
            }
            // An unknown id everywhere: the answer says whether the credential was taken.
            let url = path
                .replace("{id}", &uuid::Uuid::now_v7().to_string())
                .replace("{owner_id}", "o")
                .replace("{key_id}", &uuid::Uuid::now_v7().to_string());
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let status =
                with_token(&server, &token, method.clone(), &url).json(&json!({})).send().await.unwrap().status();
            assert_eq!(status != StatusCode::UNAUTHORIZED, documented, "{method} {path}: {status}");
        }
    }
    assert!(taking.contains(&"create_app".to_owned()) && taking.contains(&"revoke_token".to_owned()), "{taking:?}");
    assert!(!taking.contains(&"rotate_service_key".to_owned()) && !taking.contains(&"verify".to_owned()));
    server.stop().await;
}

/// `POST /v1/apps/{app_id}/keys/import` with a JSON body; returns the status and answer.
async fn import_json(server: &TestServer, app_id: &str, body: Value) -> (StatusCode, Value) {
    let url = format!("/v1/apps/{app_id}/keys/import");
    json_of(server.admin(Method::POST, &url).json(&body).send().await.unwrap()).await
}

/// `POST /v1/apps/{app_id}/keys/import{query}` with an NDJSON body.
async fn import_ndjson(server: &TestServer, app_id: &str, query: &str, lines: String) -> (StatusCode, Value) {
    let url = format!("/v1/apps/{app_id}/keys/import{query}");
    let request = server.admin(Method::POST, &url).header("content-type", "application/x-ndjson").body(lines);
    json_of(request.send().await.unwrap()).await
}

/// The lowercase hex SHA-256 of a key.
fn sha256_hex(key: &str) -> String {
    use keypal::Hasher;
    keypal::hash::Sha256Hasher.hash(key.as_bytes()).trim_start_matches("$sha256$").to_owned()
}

/// The (status, error code, error field) of each result of an import's answer.
fn outcomes(report: &Value) -> Vec<(u64, String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["index"].as_u64().unwrap(), text(&r["status"]), text(&r["error"]["code"]), text(&r["error"]["field"]))
        })
        .collect()
}

/// The application's keys (revoked included) and its audit log.
async fn keys_and_audit(server: &TestServer, app_id: &str) -> (Value, Value) {
    let url = format!("/v1/apps/{app_id}/keys?include_revoked=true&limit=1000");
    let (_, keys) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
    let (_, audit) =
        json_of(server.admin(Method::GET, &format!("/v1/audit?app_id={app_id}&limit=1000")).send().await.unwrap())
            .await;
    (keys["keys"].clone(), audit["events"].clone())
}

async fn imported_keys_verify_and_each_item_stands_alone(db: Db) {
    let server = server(db).await;
    let (app, secret) =
        server.create_app(json!({"name": "Legacy", "label": "legacy", "template": "sk_live_{secret:32:alnum}"})).await;
    let app_id = app["id"].as_str().unwrap();
    let key = |c: char| format!("sk_live_{}", c.to_string().repeat(32));
    let (plain, digest, bad_hash, both, unknown_field) = (key('a'), key('b'), key('c'), key('d'), key('e'));
    let items = json!([
        {"key": plain, "owner_id": "u1", "name": "old CI", "scopes": ["read"], "last_used_at": "2026-01-02T03:04:05Z"},
        {"hash": {"algorithm": "sha256", "value": sha256_hex(&digest)}, "owner_id": "u2", "last4": "bbbb", "enabled": false},
        {"hash": {"algorithm": "sha256", "value": "zz"}, "owner_id": "u3"},
        {"key": both, "hash": {"algorithm": "sha256", "value": sha256_hex(&both)}},
        {"key": "not a key of this application"},
        42,
        {"key": unknown_field, "colour": "blue"},
        {"hash": {"algorithm": "md5", "value": sha256_hex(&bad_hash)}},
        {"key": plain},
        {"key": key('f'), "tier": "gold"},
    ]);
    let (status, report) = import_json(&server, app_id, json!({"keys": items})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["created"].as_u64(), report["exists"].as_u64(), report["errors"].as_u64()),
        (Some(2), Some(1), Some(7)),
        "{report}"
    );
    let expected: Vec<(u64, &str, &str, &str)> = vec![
        (0, "created", "", ""),
        (1, "created", "", ""),
        (2, "error", "INVALID_INPUT", "hash"),
        (3, "error", "INVALID_INPUT", "key"),
        (4, "error", "INVALID_INPUT", "key"),
        (5, "error", "INVALID_JSON", ""),
        (6, "error", "INVALID_JSON", ""),
        (7, "error", "INVALID_INPUT", "hash.algorithm"),
        (8, "exists", "", ""),
        (9, "error", "INVALID_INPUT", "tier"),
    ];
    let got = outcomes(&report);
    let got: Vec<(u64, &str, &str, &str)> =
        got.iter().map(|(i, s, c, f)| (*i, s.as_str(), c.as_str(), f.as_str())).collect();
    assert_eq!(got, expected, "{report}");
    assert_eq!(report["results"][8]["id"], report["results"][0]["id"], "the stored key is named");
    assert!(report["results"][6]["error"]["message"].as_str().unwrap().contains("colour"), "{report}");

    let (keys, audit) = keys_and_audit(&server, app_id).await;
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    let by_owner = |owner: &str| keys.as_array().unwrap().iter().find(|k| k["owner_id"] == owner).unwrap().clone();
    assert_eq!(by_owner("u1")["last_used_at"], "2026-01-02T03:04:05Z");
    assert!(by_owner("u2")["masked"].as_str().unwrap().ends_with("bbbb"), "{keys}");
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["key_id"].is_string())
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("imported", "admin"), ("imported", "admin")], "{audit}");

    // The imported keys verify (the disabled one is refused as disabled); no refused item was stored.
    let v = server.verify(&plain, &secret, json!({"scopes": ["read"]})).await;
    assert_eq!((v["code"].as_str(), v["key"]["owner_id"].as_str()), (Some("VALID"), Some("u1")), "{v}");
    assert_eq!(server.verify(&digest, &secret, json!({})).await["code"], "DISABLED");
    for refused in [&bad_hash, &both, &unknown_field, &key('f')] {
        assert_eq!(server.verify(refused, &secret, json!({})).await["code"], "NOT_FOUND", "{refused}");
    }

    // Importing the same keys again: each `exists`, and nothing changes.
    let (keys_before, audit_before) = keys_and_audit(&server, app_id).await;
    let again = json!([{"key": plain, "name": "renamed"}, {"hash": {"algorithm": "SHA256", "encoding": "hex", "value": sha256_hex(&digest).to_uppercase()}}]);
    let (status, report) = import_json(&server, app_id, json!({"keys": again})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["created"].as_u64(), report["exists"].as_u64(), report["errors"].as_u64()),
        (Some(0), Some(2), Some(0)),
        "{report}"
    );
    assert_eq!(keys_and_audit(&server, app_id).await, (keys_before, audit_before), "nothing changed");
    server.stop().await;
}

async fn better_auth_rows_import_and_their_plaintext_keys_verify(db: Db) {
    let fixture: Value =
        serde_json::from_str(include_str!("../../../fixtures/migrating/better-auth-apikey.json")).unwrap();
    let server = server(db).await;
    // Better Auth keys: an optional prefix, then 64 letters.
    let (app, secret) = server
        .create_app(json!({
            "name": "Migrated", "label": "migrated", "template": "ba_live_{secret:64:alnum}",
            "legacy_templates": ["{secret:64:alnum}", "ba_test_{secret:64:alnum}", "ba_old_{secret:64:alnum}"],
        }))
        .await;
    let app_id = app["id"].as_str().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let rows = fixture["keys"].as_array().unwrap();
    let items: Vec<Value> = rows
        .iter()
        .map(|k| {
            let row = &k["row"];
            let mut item = json!({
                "hash": {"algorithm": "sha256", "encoding": "base64url", "value": row["key"]},
                "owner_id": row["referenceId"], "created_at": row["createdAt"], "enabled": row["enabled"] == 1,
            });
            for (from, to) in [("name", "name"), ("lastRequest", "last_used_at"), ("remaining", "remaining")] {
                if !row[from].is_null() {
                    item[to] = row[from].clone();
                }
            }
            if let Some(metadata) = row["metadata"].as_str().filter(|m| *m != "null") {
                item["metadata"] = serde_json::from_str(metadata).unwrap();
            }
            // An expiry that has passed since the fixture was made is not one to import.
            let expires = row["expiresAt"]
                .as_str()
                .map(|at| time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap());
            if expires.is_some_and(|at| at > now) {
                item["expires_at"] = row["expiresAt"].clone();
            }
            item
        })
        .collect();
    let (status, report) = import_json(&server, app_id, json!({"keys": items})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["created"].as_u64(), Some(rows.len() as u64), "{report}");

    for (k, result) in rows.iter().zip(report["results"].as_array().unwrap()) {
        let (plaintext, row) = (k["plaintext"].as_str().unwrap(), &k["row"]);
        let id = result["id"].as_str().unwrap();
        let (_, stored) = json_of(server.admin(Method::GET, &format!("/v1/keys/{id}")).send().await.unwrap()).await;
        assert_eq!(stored["owner_id"], row["referenceId"], "{stored}");
        assert_eq!(stored["remaining"], row["remaining"], "{stored}");
        let v = server.verify(plaintext, &secret, json!({})).await;
        let code = if row["enabled"] == 1 { "VALID" } else { "DISABLED" };
        assert_eq!(v["code"], code, "{}: {v}", k["label"]);
        if code == "VALID" {
            assert_eq!(v["key"]["id"], id);
            assert_eq!(v["key"]["name"], row["name"]);
        }
        // One letter changed is another key.
        let mut wrong = plaintext.to_owned();
        let last = if wrong.ends_with('a') { "b" } else { "a" };
        wrong.replace_range(wrong.len() - 1.., last);
        assert_eq!(server.verify(&wrong, &secret, json!({})).await["code"], "NOT_FOUND");
    }
    let with_credits = rows.iter().position(|k| k["row"]["remaining"] == 99).unwrap();
    let v = server.verify(rows[with_credits]["plaintext"].as_str().unwrap(), &secret, json!({})).await;
    assert_eq!(v["remaining"], 97, "99 imported, two verifications spent: {v}");
    server.stop().await;
}

async fn a_kota_key_imports_as_its_id_and_the_bcrypt_of_its_secret(db: Db) {
    use keypal::Hasher;
    let server = server(db).await;
    let (app, secret) = server
        .create_app(json!({
            "name": "Kota", "label": "kota", "template": "kota_{tier}_{id:12:base32}_{secret:36:hex}",
            "tiers": {"free": {}, "solo": {}, "team": {}}, "default_tier": "free",
        }))
        .await;
    let app_id = app["id"].as_str().unwrap();
    // A key of this format, made here and deleted: the old system's key.
    let (key, record) = server.create_key(app_id, json!({"tier": "solo"})).await;
    let response = server.admin(Method::DELETE, &format!("/v1/keys/{}", record["id"].as_str().unwrap())).send().await;
    assert_eq!(response.unwrap().status(), StatusCode::NO_CONTENT);
    let parts: Vec<&str> = key.split('_').collect();
    let (id, key_secret) = (parts[2], parts[3]);
    let bcrypt = keypal::hash::BcryptHasher::new(4).unwrap().hash(key_secret.as_bytes());
    let hash = json!({"algorithm": "bcrypt", "covers": "secret", "value": bcrypt});
    let items = json!([
        {"hash": hash, "owner_id": "u1"},
        {"id": id, "hash": hash, "tier": "solo", "owner_id": "u1", "last4": &key[key.len() - 4..]},
        {"id": id, "hash": hash, "tier": "solo"},
    ]);
    let (status, report) = import_json(&server, app_id, json!({"keys": items})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let got: Vec<(u64, String, String, String)> = outcomes(&report);
    // Without its id the key cannot be found (only a plain SHA-256 is found by its digest).
    assert_eq!(got[0], (0, "error".into(), "INVALID_INPUT".into(), "hint".into()), "{report}");
    assert_eq!(got[1].1, "created", "{report}");
    assert_eq!(got[2].1, "exists", "the id is taken: {report}");
    let v = server.verify(&key, &secret, json!({})).await;
    assert_eq!((v["code"].as_str(), v["key"]["tier"].as_str()), (Some("VALID"), Some("solo")), "{v}");
    let other_secret = format!("kota_solo_{id}_{}", "0".repeat(36));
    assert_eq!(server.verify(&other_secret, &secret, json!({})).await["code"], "NOT_FOUND");
    // After its first verification the key is re-hashed whole, and still verifies.
    assert_eq!(server.verify(&key, &secret, json!({})).await["code"], "VALID");
    server.stop().await;
}

async fn owner_limits_apply_to_imports_unless_skipped(db: Db) {
    let server = server(db).await;
    let (app, secret) = server
        .create_app(
            json!({"name": "L", "label": "l", "template": "lk_{secret:32:alnum}", "max_active_keys_per_owner": 1}),
        )
        .await;
    let app_id = app["id"].as_str().unwrap();
    let key = |c: char| format!("lk_{}", c.to_string().repeat(32));
    let items = json!([{"key": key('a'), "owner_id": "u"}, {"key": key('b'), "owner_id": "u"}]);
    let (_, report) = import_json(&server, app_id, json!({"keys": items})).await;
    let got = outcomes(&report);
    assert_eq!(
        (got[0].1.as_str(), got[1].1.as_str(), got[1].2.as_str()),
        ("created", "error", "KEY_LIMIT_REACHED"),
        "{report}"
    );
    assert_eq!(server.verify(&key('b'), &secret, json!({})).await["code"], "NOT_FOUND");

    let (_, report) =
        import_json(&server, app_id, json!({"keys": [{"key": key('b'), "owner_id": "u"}], "skip_limits": true})).await;
    assert_eq!(report["created"], 1, "{report}");
    let line = json!({"key": key('c'), "owner_id": "u"}).to_string();
    let (_, report) = import_ndjson(&server, app_id, "", line.clone()).await;
    assert_eq!(outcomes(&report), [(1, "error".into(), "KEY_LIMIT_REACHED".into(), String::new())], "{report}");
    let (_, report) = import_ndjson(&server, app_id, "?skip_limits=true", line).await;
    assert_eq!(report["created"], 1, "{report}");
    for c in ['a', 'b', 'c'] {
        assert_eq!(server.verify(&key(c), &secret, json!({})).await["code"], "VALID");
    }
    // The limit still holds for keys created afterwards.
    let url = format!("/v1/apps/{app_id}/keys");
    let (status, refused) =
        json_of(server.admin(Method::POST, &url).json(&json!({"owner_id": "u"})).send().await.unwrap()).await;
    assert_eq!((status, &refused["error"]["code"]), (StatusCode::FORBIDDEN, &json!("KEY_LIMIT_REACHED")));
    server.stop().await;
}

async fn an_ndjson_import_of_thousands_of_lines_reports_bad_lines_by_number(db: Db) {
    let server = server(db).await;
    let (app, secret) =
        server.create_app(json!({"name": "Bulk", "label": "bulk", "template": "bk_{secret:40:hex}"})).await;
    let app_id = app["id"].as_str().unwrap();
    let key = |n: usize| format!("bk_{n:040x}");
    let lines = 3000;
    let mut text = String::new();
    let mut bad = Vec::new();
    for n in 1..=lines {
        let line = match n {
            7 => "{\"hash\": ".to_owned(),
            100 => "   ".to_owned(),
            1500 => format!("{{\"key\": \"{}\"}}", "x".repeat(70 * 1024)),
            2000 => json!({"key": key(n), "owner": "u"}).to_string(),
            2500 => "[1, 2]".to_owned(),
            _ => json!({"hash": {"algorithm": "sha256", "value": sha256_hex(&key(n))}, "name": format!("line {n}")})
                .to_string(),
        };
        match n {
            7 | 2000 | 2500 => bad.push((n as u64, "INVALID_JSON")),
            1500 => bad.push((n as u64, "PAYLOAD_TOO_LARGE")),
            _ => {}
        }
        text.push_str(&line);
        // Windows line ends on some lines, and none after the last.
        text.push_str(match n {
            _ if n == lines => "",
            _ if n % 3 == 0 => "\r\n",
            _ => "\n",
        });
    }
    let (status, report) = import_ndjson(&server, app_id, "", text.clone()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let created = lines - bad.len() - 1;
    assert_eq!(
        (report["created"].as_u64(), report["exists"].as_u64(), report["errors"].as_u64()),
        (Some(created as u64), Some(0), Some(bad.len() as u64))
    );
    let got: Vec<(u64, String)> = outcomes(&report).into_iter().map(|(i, _, code, _)| (i, code)).collect();
    let want: Vec<(u64, String)> = bad.iter().map(|(n, code)| (*n, (*code).to_owned())).collect();
    assert_eq!(got, want, "only the lines not created, by line number");
    assert_eq!(report["unreported"], 0);
    for n in [1, 6, 8, 99, 101, 1499, 2999, 3000] {
        assert_eq!(server.verify(&key(n), &secret, json!({})).await["code"], "VALID", "line {n}");
    }
    assert_eq!(server.verify(&key(2000), &secret, json!({})).await["code"], "NOT_FOUND");

    // Sent again: every good line exists, nothing changes.
    let (status, report) = import_ndjson(&server, app_id, "", text).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!((report["created"].as_u64(), report["exists"].as_u64()), (Some(0), Some(created as u64)));
    let url = format!("/v1/apps/{app_id}");
    let (_, app) = json_of(server.admin(Method::GET, &url).send().await.unwrap()).await;
    assert_eq!(app["app"]["total_keys"].as_u64(), Some(created as u64));
    server.stop().await;
}
