//! A real `keypal serve` on a free loopback port, on SQLite (a new file) or PostgreSQL
//! (a new schema), with an HTTP client that speaks to it over the socket.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;

use keypal_server::{ServeConfig, Server};
use keypal_testing::PostgresServer;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which database the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn name(db: Db)` of the calling file as one test per
/// database: `sqlite::name`, and `postgres::name` when PostgreSQL is [`available`].
#[allow(unused_macros)]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Db::Sqlite).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if $crate::common::available($crate::common::Db::Postgres) {
                    super::$name($crate::common::Db::Postgres).await;
                }
            })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both;

/// Whether tests on `db` run here: `false` when PostgreSQL is not installed (the test is
/// then skipped, with one line saying so; under `CI=true` this fails it instead).
pub fn available(db: Db) -> bool {
    match db {
        Db::Sqlite => true,
        Db::Postgres => PostgresServer::shared().is_some(),
    }
}

/// The URL of this test binary's PostgreSQL (see `keypal-testing`), once the test has
/// checked [`available`].
pub fn postgres_url() -> &'static str {
    PostgresServer::shared().map(PostgresServer::url).expect("the test checks available(Db::Postgres) first")
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("keypal-server-tests")
        .join(uuid::Uuid::now_v7().simple().to_string());
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A server config on `db`, with a key file and database of its own (for PostgreSQL,
/// once the test has checked [`available`]).
pub fn config(db: Db) -> ServeConfig {
    let dir = scratch_dir();
    let mut config = ServeConfig::default();
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.key_file = dir.join("keypal.key");
    match db {
        Db::Sqlite => config.database_url = format!("sqlite://{}", dir.join("keypal.db").display()),
        Db::Postgres => {
            config.database_url = postgres_url().to_owned();
            config.database_schema = Some(PostgresServer::fresh_schema());
            config.max_connections = 8;
        }
    }
    config
}

/// A running server and what a test needs to call it.
pub struct TestServer {
    pub base: String,
    pub config: ServeConfig,
    pub admin_password: String,
    pub service_key: String,
    pub http: reqwest::Client,
    /// The admin session cookie (`keypal_session=...`), after `login`.
    pub cookie: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `db` with generated secrets.
    pub async fn start(db: Db) -> TestServer {
        Self::start_with(config(db)).await
    }

    /// Starts a server with this config (the admin password and service key are generated
    /// unless set).
    pub async fn start_with(config: ServeConfig) -> TestServer {
        Self::launch(config, None).await
    }

    /// Starts another instance on the database of a running one, whose service key
    /// `service_key` is stored there (generated or rotated, not set by the configuration).
    pub async fn join(config: ServeConfig, service_key: &str) -> TestServer {
        Self::launch(config, Some(service_key.to_owned())).await
    }

    async fn launch(config: ServeConfig, stored_service_key: Option<String>) -> TestServer {
        let server = match Server::bind(&config).await {
            Ok(server) => server,
            Err(e) if config.database_url.starts_with("postgres") => {
                panic!("the test PostgreSQL at {} does not answer: {e}", config.database_url)
            }
            Err(e) => panic!("the server did not start: {e}"),
        };
        let addr = server.local_addr().expect("address");
        let admin_password = config
            .admin_password
            .clone()
            .or_else(|| server.generated().admin_password.clone())
            .expect("a generated admin password");
        let service_key = config
            .service_key
            .clone()
            .or(stored_service_key)
            .or_else(|| server.generated().service_key.clone())
            .expect("a generated service key");
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server.run(async move { drop(stopped.await) }).await.expect("the server failed");
        });
        TestServer {
            base: format!("http://{addr}"),
            config,
            admin_password,
            service_key,
            http: reqwest::Client::new(),
            cookie: None,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Stops the server gracefully (pending writes are flushed) and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with no credentials.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A request with the admin session cookie.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.anon(method, path);
        match &self.cookie {
            Some(cookie) => request.header("cookie", cookie),
            None => request,
        }
    }

    /// Logs in with the admin password and keeps the session cookie.
    pub async fn login(&mut self) {
        let response = self
            .anon(Method::POST, "/v1/session")
            .json(&json!({"password": self.admin_password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "login");
        let set_cookie = response.headers().get("set-cookie").expect("a session cookie").to_str().unwrap().to_owned();
        self.cookie = Some(set_cookie.split(';').next().unwrap().to_owned());
    }

    /// Creates an application; returns (app, client secret).
    pub async fn create_app(&self, body: Value) -> (Value, String) {
        let response = self.admin(Method::POST, "/v1/apps").json(&body).send().await.unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::CREATED, "create app: {body}");
        (body["app"].clone(), body["client_secret"].as_str().unwrap().to_owned())
    }

    /// Creates a key in an application as admin; returns (key, record).
    pub async fn create_key(&self, app_id: &str, body: Value) -> (String, Value) {
        let response = self.admin(Method::POST, &format!("/v1/apps/{app_id}/keys")).json(&body).send().await.unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::CREATED, "create key: {body}");
        (body["key"].as_str().unwrap().to_owned(), body["record"].clone())
    }

    /// `POST /v1/verify` with the service key; returns the JSON answer (asserting 200).
    pub async fn verify(&self, key: &str, client_secret: &str, extra: Value) -> Value {
        let mut body = json!({"key": key, "client_secret": client_secret});
        if let (Some(obj), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            obj.extend(extra.clone());
        }
        let response =
            self.anon(Method::POST, "/v1/verify").bearer_auth(&self.service_key).json(&body).send().await.unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "verify: {body}");
        body
    }
}

/// The status and JSON body of a response (Null when the body is empty).
pub async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, body)
}
