//! What the tests share: a router served on a bound loopback socket, and a real
//! `keypal serve` (its router in this process, over a new SQLite file).
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;

use axum::Router;
use keypal_server::{ServeConfig, Server};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Serves `app` on `127.0.0.1:0`; returns its base URL (`http://127.0.0.1:port`).
pub async fn serve(app: Router) -> String {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The status, headers and JSON body of a response (Null when empty, a string when not JSON).
pub async fn answer(response: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, headers, body)
}

/// A header's value as text ("" when absent).
pub fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

/// A running `keypal serve` with one application.
pub struct KeypalServe {
    pub base: String,
    pub service_key: String,
    pub client_secret: String,
    pub app_id: String,
    http: reqwest::Client,
    cookie: String,
}

impl KeypalServe {
    /// Starts a server over a new SQLite file, logs in and creates an application
    /// (`app` is the body of `POST /v1/apps`).
    pub async fn start(app: Value) -> KeypalServe {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("keypal-axum-tests")
            .join(uuid::Uuid::now_v7().simple().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = ServeConfig::default();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.key_file = dir.join("keypal.key");
        config.database_url = format!("sqlite://{}", dir.join("keypal.db").display());
        let server = Server::bind(&config).await.expect("keypal serve starts");
        let addr = server.local_addr().unwrap();
        let admin_password = server.generated().admin_password.clone().unwrap();
        let service_key = server.generated().service_key.clone().unwrap();
        tokio::spawn(async move { server.run(std::future::pending::<()>()).await.unwrap() });
        let base = format!("http://{addr}");
        let http = reqwest::Client::new();
        let login =
            http.post(format!("{base}/v1/session")).json(&json!({"password": admin_password})).send().await.unwrap();
        assert_eq!(login.status(), StatusCode::NO_CONTENT);
        let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        let created = http.post(format!("{base}/v1/apps")).header("cookie", &cookie).json(&app).send().await.unwrap();
        let (status, _, body) = answer(created).await;
        assert_eq!(status, StatusCode::CREATED, "create app: {body}");
        KeypalServe {
            base,
            service_key,
            client_secret: body["client_secret"].as_str().unwrap().to_owned(),
            app_id: body["app"]["id"].as_str().unwrap().to_owned(),
            http,
            cookie,
        }
    }

    /// An admin request to the server.
    pub async fn admin(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, _, body) = answer(response).await;
        (status, body)
    }

    /// Creates a key in the application; returns (key, id).
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let (status, body) = self.admin(Method::POST, &format!("/v1/apps/{}/keys", self.app_id), body).await;
        assert_eq!(status, StatusCode::CREATED, "create key: {body}");
        (body["key"].as_str().unwrap().to_owned(), body["record"]["id"].as_str().unwrap().to_owned())
    }
}
