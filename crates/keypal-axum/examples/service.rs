//! A small invoicing API whose customers call it with API keys they manage themselves.
//!
//! - keys in SQLite (`keypal-axum-example.db` in the working directory, or `DATABASE_URL`);
//! - `/api/*` behind `ApiKeyLayer`: every key is of the `free` tier, 5 requests a minute;
//!   `GET /api/invoices` needs the scope `invoices:read`, `POST /api/invoices` needs
//!   `invoices:write` and costs 5 credits (keys without credits spend none);
//! - `/account/keys` is the self-service router, behind a toy login (`POST /login` sets a
//!   cookie naming the user; a real service uses its own sessions).
//!
//! ```sh
//! cargo run -p keypal-axum --example service
//! ```
//! then follow the `curl` lines it prints.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;

use axum::extract::Form;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keypal::{KeyManager, RateLimit, Tier};
use keypal_axum::{ApiKeyLayer, Cost, RequireScopes, SelfService, VerifiedKey};
use keypal_sql::SqlStore;
use serde::Deserialize;
use serde_json::{Value, json};

/// The signed-in user of a request: the toy login's `user` cookie.
fn signed_in(parts: &Parts) -> impl Future<Output = Result<String, StatusCode>> + Send + use<> {
    let user = parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix("user="))
        .filter(|user| !user.is_empty())
        .map(str::to_owned);
    async move { user.ok_or(StatusCode::UNAUTHORIZED) }
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

/// The toy login: anyone is whoever they say (a real service checks a password).
async fn login(Form(login): Form<Login>) -> Response {
    let valid = !login.user.is_empty() && login.user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match HeaderValue::from_str(&format!("user={}; HttpOnly; SameSite=Strict; Path=/", login.user)) {
        Ok(cookie) if valid => ([(SET_COOKIE, cookie)], "signed in\n").into_response(),
        _ => (StatusCode::BAD_REQUEST, "a user name is letters, digits and _\n").into_response(),
    }
}

async fn list_invoices(key: VerifiedKey) -> Json<Value> {
    let owner = key.owner_id().unwrap_or("nobody");
    Json(json!([{"id": "inv_1", "customer": owner, "total": 4200}]))
}

async fn create_invoice(key: VerifiedKey) -> (StatusCode, Json<Value>) {
    (StatusCode::CREATED, Json(json!({"id": "inv_2", "customer": key.owner_id(), "credits_left": key.remaining()})))
}

async fn me(key: VerifiedKey) -> Json<Value> {
    Json(json!({
        "key_id": key.id().to_string(),
        "owner": key.owner_id(),
        "name": key.name(),
        "tier": key.tier(),
        "scopes": key.scopes(),
        "requests_left_this_minute": key.rate_limit().map(|l| l.remaining),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://keypal-axum-example.db".to_owned());
    let keys = KeyManager::builder()
        .prefix("sk_demo")
        .tier("free", Tier::new().rate_limit(RateLimit::new(5, std::time::Duration::from_secs(60))?))
        .default_tier("free")
        .max_active_keys_per_owner(5)
        .store(SqlStore::connect(&url).await?)
        .build()?;

    let api = Router::new()
        .route(
            "/invoices",
            get(list_invoices).route_layer(RequireScopes::all(["invoices:read"])).merge(
                post(create_invoice).route_layer(Cost::new(5)).route_layer(RequireScopes::all(["invoices:write"])),
            ),
        )
        .route("/me", get(me))
        .layer(ApiKeyLayer::new(keys.clone()).realm("invoices"));

    let account = SelfService::new(keys.clone(), signed_in).scopes(["invoices:read", "invoices:write"]).router();

    let app = Router::new()
        .route("/login", post(login))
        .nest("/account/keys", account)
        .nest("/api", api)
        .route("/", get(|| async { "see /api/me, /api/invoices, /account/keys\n" }));

    let addr: SocketAddr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned()).parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let at = listener.local_addr()?;
    println!("invoices API on http://{at} (keys in {url})");
    println!("  curl -c jar -d user=alice http://{at}/login");
    println!(
        "  curl -b jar -H 'content-type: application/json' -d '{{\"name\": \"laptop\", \"scopes\": [\"invoices:read\"]}}' http://{at}/account/keys"
    );
    println!("  curl -b jar http://{at}/account/keys");
    println!("  curl -H \"Authorization: Bearer $KEY\" http://{at}/api/me");
    println!("  curl -H \"X-API-Key: $KEY\" http://{at}/api/invoices");
    println!("  curl -i -X POST -H \"X-API-Key: $KEY\" http://{at}/api/invoices   # 403: no invoices:write");
    println!("  (a sixth request within a minute is 429 with Retry-After: the free tier's 5/minute)");
    axum::serve(listener, app).with_graceful_shutdown(async { drop(tokio::signal::ctrl_c().await) }).await?;
    keys.flush_last_used().await?;
    Ok(())
}
