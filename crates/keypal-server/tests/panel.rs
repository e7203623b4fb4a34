//! The admin panel over plain HTTP (no browser): sessions, the login page, CSRF tokens,
//! same-origin POSTs and the security headers on every `/admin` answer.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{Db, TestServer};
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

/// A client that shows redirects instead of following them.
fn client() -> Client {
    Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Percent-encodes a query or form value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `application/x-www-form-urlencoded`.
fn form(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

fn location(response: &Response) -> String {
    response.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// The value of the first `name="csrf"` field of a page.
fn csrf_in(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// A panel session over HTTP.
struct Panel {
    server: TestServer,
    http: Client,
    cookie: String,
    csrf: String,
}

impl Panel {
    /// A server, and a session logged in through the login form.
    async fn start() -> Panel {
        Self::start_with(common::config(Db::Sqlite)).await
    }

    /// A server with this config, and a session logged in through the login form.
    async fn start_with(config: keypal_server::ServeConfig) -> Panel {
        let mut server = TestServer::start_with(config).await;
        let http = client();
        let response = login(&server, &http, &server.admin_password, "/admin/apps").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookie = response.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
        server.cookie = Some(cookie.clone());
        let page = http.get(server.url("/admin/apps")).header(COOKIE, &cookie).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let csrf = csrf_in(&page.text().await.unwrap());
        Panel { server, http, cookie, csrf }
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(self.server.url(path)).header(COOKIE, &self.cookie)
    }

    /// A form post from the panel's own pages (the browser sends the Origin).
    fn post(&self, path: &str, pairs: &[(&str, &str)]) -> RequestBuilder {
        self.post_from(&self.server.base, path, pairs)
    }

    /// A form post from a page of `origin`, with the session cookie.
    fn post_from(&self, origin: &str, path: &str, pairs: &[(&str, &str)]) -> RequestBuilder {
        self.http
            .post(self.server.url(path))
            .header(COOKIE, &self.cookie)
            .header(ORIGIN, origin)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(pairs))
    }

    /// Whether `/v1/verify` takes the service key the server started with.
    async fn service_key_unchanged(&self) -> bool {
        let response = self
            .server
            .anon(Method::POST, "/v1/verify")
            .bearer_auth(&self.server.service_key)
            .json(&json!({"key": "sk-nothing", "client_secret": "cs-nothing"}))
            .send()
            .await
            .unwrap();
        response.status() != StatusCode::UNAUTHORIZED
    }

    async fn app_count(&self) -> usize {
        let response = self.server.admin(Method::GET, "/v1/apps").send().await.unwrap();
        let (status, body) = common::json_of(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["apps"].as_array().unwrap().len()
    }
}

async fn login(server: &TestServer, http: &Client, password: &str, next: &str) -> Response {
    http.post(server.url("/admin/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[("password", password), ("next", next)]))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_send_strangers_to_the_login_page_and_back() {
    let server = TestServer::start(Db::Sqlite).await;
    let http = client();
    let id = uuid::Uuid::now_v7();
    let pages = [
        ("/admin/apps", "/admin/apps"),
        (&*format!("/admin/apps/{id}"), &*format!("/admin/apps/{id}")),
        ("/admin/settings", "/admin/settings"),
        (&*format!("/admin/keys/{id}/edit"), &*format!("/admin/keys/{id}/edit")),
        ("/admin/audit?action=revoked&owner_id=a%20b", "/admin/audit%3Faction%3Drevoked%26owner_id%3Da%2520b"),
        ("/admin/tokens", "/admin/tokens"),
    ];
    for (page, next) in pages {
        for cookie in [None, Some("keypal_session=expired-or-made-up")] {
            let mut request = http.get(server.url(page));
            if let Some(cookie) = cookie {
                request = request.header(COOKIE, cookie);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page} ({cookie:?})");
            assert_eq!(location(&response), format!("/admin/login?next={next}"), "{page}");
        }
    }
    let response = http.get(server.url("/admin")).send().await.unwrap();
    assert_eq!((response.status(), location(&response)), (StatusCode::SEE_OTHER, "/admin/apps".to_owned()));
    // A form post without a session goes to the login page, and nothing is done.
    let response = http
        .post(server.url("/admin/service-key/rotate"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (response.status(), location(&response)),
        (StatusCode::SEE_OTHER, "/admin/login?next=/admin/apps".into())
    );

    // The login page keeps where to go, and logging in goes there.
    let page = "/admin/audit?action=revoked&owner_id=a%20b";
    let response = http.get(server.url(&format!("/admin/login?next={}", pages[4].1))).send().await.unwrap();
    let html = response.text().await.unwrap();
    assert!(html.contains("name=\"next\" value=\"/admin/audit?action=revoked&#38;owner_id=a%20b\""), "{html}");
    let response = login(&server, &http, &server.admin_password, page).await;
    assert_eq!((response.status(), location(&response)), (StatusCode::SEE_OTHER, page.to_owned()));
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "the session cookie is {attribute}: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure");
    let session = cookie.split(';').next().unwrap();
    let response = http.get(server.url(page)).header(COOKIE, session).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Behind a TLS proxy the cookie is Secure.
    let response = http
        .post(server.url("/admin/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(form(&[("password", &server.admin_password)]))
        .send()
        .await
        .unwrap();
    assert!(response.headers()[SET_COOKIE].to_str().unwrap().contains("; Secure"));
    server.stop().await;
}

#[tokio::test]
async fn logging_in_never_leads_off_site() {
    let server = TestServer::start(Db::Sqlite).await;
    let http = client();
    let foreign = [
        "https://evil.example/admin",
        "//evil.example/admin",
        "/\\evil.example",
        "/admin\\..\\\\evil.example",
        "http:/admin",
        "javascript:alert(1)",
        "/v1/apps",
        "",
    ];
    for next in foreign {
        let response = http.get(server.url(&format!("/admin/login?next={}", encode(next)))).send().await.unwrap();
        let html = response.text().await.unwrap();
        assert!(html.contains("name=\"next\" value=\"/admin/apps\""), "{next:?}: {html}");
        let response = login(&server, &http, &server.admin_password, next).await;
        assert_eq!((response.status(), location(&response)), (StatusCode::SEE_OTHER, "/admin/apps".into()), "{next:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn wrong_passwords_are_refused_then_throttled() {
    let server = TestServer::start(Db::Sqlite).await;
    let http = client();
    for _ in 0..5 {
        let response = login(&server, &http, "guess", "/admin/apps").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get(SET_COOKIE).is_none());
        let html = response.text().await.unwrap();
        assert!(html.contains("Wrong password."), "{html}");
        assert!(html.contains("id=\"password\""), "the form is shown again");
    }
    // Then even the right password waits.
    for password in ["guess", server.admin_password.as_str()] {
        let response = login(&server, &http, password, "/admin/apps").await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().get(SET_COOKIE).is_none());
        assert!(response.text().await.unwrap().contains("Too many failed attempts"));
    }
    server.stop().await;
}

#[tokio::test]
async fn every_admin_answer_carries_the_security_headers() {
    let panel = Panel::start().await;
    let (http, server) = (&panel.http, &panel.server);
    let answers: Vec<(&str, Response)> = vec![
        ("login page", http.get(server.url("/admin/login")).send().await.unwrap()),
        ("redirect to login", http.get(server.url("/admin/apps")).send().await.unwrap()),
        ("wrong password", login(server, http, "nope", "/admin/apps").await),
        ("stylesheet", http.get(server.url("/admin/static/app.css")).send().await.unwrap()),
        ("script", http.get(server.url("/admin/static/app.js")).send().await.unwrap()),
        ("unknown page", panel.get("/admin/nothing/here").send().await.unwrap()),
        ("wrong method", panel.get("/admin/logout").send().await.unwrap()),
        ("applications", panel.get("/admin/apps").send().await.unwrap()),
        ("settings", panel.get("/admin/settings").send().await.unwrap()),
        ("audit", panel.get("/admin/audit").send().await.unwrap()),
        ("tokens", panel.get("/admin/tokens").send().await.unwrap()),
        ("token created", panel.post("/admin/tokens", &[("csrf", &panel.csrf), ("name", "ci")]).send().await.unwrap()),
        ("refused post", panel.post("/admin/apps", &[("name", "x"), ("label", "x")]).send().await.unwrap()),
        (
            "created",
            panel.post("/admin/apps", &[("csrf", &panel.csrf), ("name", "A"), ("label", "a")]).send().await.unwrap(),
        ),
    ];
    for (what, response) in answers {
        let headers = response.headers();
        let csp = headers.get(CONTENT_SECURITY_POLICY).map(|v| v.to_str().unwrap().to_owned());
        let csp = csp.unwrap_or_else(|| panic!("{what} ({}): no Content-Security-Policy", response.status()));
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{what}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{what}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(headers["referrer-policy"], "same-origin", "{what}");
        assert!(headers.get("cache-control").is_some(), "{what}");
        if matches!(what, "applications" | "created" | "tokens" | "token created") {
            assert_eq!(headers["cache-control"], "no-store", "{what}: pages with secrets are not stored");
            // No inline code anywhere: the strict CSP would block it.
            let html = response.text().await.unwrap();
            for inline in ["<script>", "style=", "onclick=", "onload=", "<style"] {
                assert!(!html.contains(inline), "{what}: inline code {inline}");
            }
        }
    }
    panel.server.stop().await;
}

#[tokio::test]
async fn state_changes_need_the_session_csrf_token() {
    let panel = Panel::start().await;
    let app = [("name", "Billing"), ("label", "billing"), ("recoverable", "on")];
    for token in [None, Some(""), Some("0000"), Some(&panel.csrf[..panel.csrf.len() - 1])] {
        let mut fields = app.to_vec();
        if let Some(token) = token {
            fields.push(("csrf", token));
        }
        let response = panel.post("/admin/apps", &fields).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "token {token:?}");
        let response = panel.post("/admin/service-key/rotate", &fields).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "token {token:?}");
        let response = panel.post("/admin/logout", &fields).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "token {token:?}");
    }
    assert_eq!(panel.app_count().await, 0);
    assert!(panel.service_key_unchanged().await);
    assert_eq!(panel.get("/admin/apps").send().await.unwrap().status(), StatusCode::OK, "still logged in");

    // With the token it works, and the secret comes in the page, never in a URL.
    let mut fields = app.to_vec();
    fields.push(("csrf", &panel.csrf));
    let response = panel.post("/admin/apps", &fields).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "shown, not redirected");
    let html = response.text().await.unwrap();
    let secret = html.split("id=\"secret-value\"").nth(1).and_then(|rest| rest.split('>').nth(1)).unwrap();
    let secret = secret.split('<').next().unwrap();
    assert!(secret.starts_with("cs-"), "{secret}");
    assert_eq!(panel.app_count().await, 1);
    // The audit log shows the creation, with the application's name and the details.
    let html = panel.get("/admin/audit?action=app_created").send().await.unwrap().text().await.unwrap();
    let row = html.split("<td data-label=\"Action\">app_created</td>").nth(1).expect("an app_created row");
    let row = row.split("</tr>").next().unwrap();
    assert!(row.contains(&format!("<td data-label=\"Application\">{}</td>", app[0].1)), "{row}");
    assert!(row.contains("&#34;label&#34;"), "the details, escaped: {row}");

    // The reveal calls take the token in a header.
    let response = panel.server.admin(Method::GET, "/v1/apps").send().await.unwrap();
    let (_, apps) = common::json_of(response).await;
    let app_id = apps["apps"][0]["id"].as_str().unwrap().to_owned();
    let (key, record) = panel.server.create_key(&app_id, json!({"owner_id": "alice"})).await;
    let reveal = format!("/admin/keys/{}/reveal", record["id"].as_str().unwrap());
    let post = |token: Option<&str>| {
        let request = panel.post(&reveal, &[]);
        match token {
            Some(token) => request.header("x-csrf-token", token),
            None => request,
        }
    };
    assert_eq!(post(None).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(post(Some("wrong")).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let form_token = panel.post(&reveal, &[("csrf", &panel.csrf)]).send().await.unwrap();
    assert_eq!(form_token.status(), StatusCode::FORBIDDEN, "the reveal route takes the header only");
    let response = post(Some(&panel.csrf)).send().await.unwrap();
    let (status, body) = common::json_of(response).await;
    assert_eq!((status, body["key"].as_str()), (StatusCode::OK, Some(key.as_str())));
    let response = panel.http.post(panel.server.url("/admin/service-key/reveal")).header(COOKIE, &panel.cookie).send();
    assert_eq!(response.await.unwrap().status(), StatusCode::FORBIDDEN);

    // Logging out with the token ends the session.
    let response = panel.post("/admin/logout", &[("csrf", &panel.csrf)]).send().await.unwrap();
    assert_eq!((response.status(), location(&response)), (StatusCode::SEE_OTHER, "/admin/login?ok=logged_out".into()));
    assert_eq!(panel.get("/admin/apps").send().await.unwrap().status(), StatusCode::SEE_OTHER);
    panel.server.stop().await;
}

#[tokio::test]
async fn a_service_key_from_the_environment_is_shown_as_such_and_never_rotated() {
    let panel = Panel::start().await;
    let page = panel.get("/admin/settings").send().await.unwrap().text().await.unwrap();
    assert!(page.contains("action=\"/admin/service-key/rotate\""), "a generated key can be rotated: {page}");
    assert!(!page.contains("KEYPAL_SERVICE_KEY"), "{page}");

    let mut config = common::config(Db::Sqlite);
    config.service_key = Some("kp_svc_set_by_the_environment_0123456789abc".to_owned());
    let panel = Panel::start_with(config).await;
    let response = panel.get("/admin/settings").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("comes from the environment") && page.contains("KEYPAL_SERVICE_KEY"), "{page}");
    assert!(!page.contains("/admin/service-key/rotate"), "no rotate form: {page}");

    // A rotate action posted anyway (an old page, a script) is refused, and says why.
    let response = panel.post("/admin/service-key/rotate", &[("csrf", &panel.csrf)]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let page = response.text().await.unwrap();
    assert!(page.contains("KEYPAL_SERVICE_KEY"), "{page}");
    assert!(!page.contains("New service key"), "no new key is shown: {page}");
    assert!(panel.service_key_unchanged().await);
}

#[tokio::test]
async fn posts_from_other_origins_are_refused() {
    let panel = Panel::start().await;
    let other_port =
        panel.server.base.rsplit_once(':').map(|(host, port)| format!("{host}:{}", port.parse::<u16>().unwrap() ^ 1));
    let origins = ["http://evil.example", "null", &other_port.unwrap(), "https://127.0.0.1"];
    for origin in origins {
        let fields = [("csrf", panel.csrf.as_str()), ("name", "Billing"), ("label", "billing")];
        let response = panel.post_from(origin, "/admin/apps", &fields).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin}");
        let response = panel.post_from(origin, "/admin/service-key/rotate", &fields).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin}");
        // Nor with this server's origin beside it.
        let response = panel.post("/admin/apps", &fields).header(ORIGIN, origin).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin} and this origin");
        // Nor can another site log a browser in (login CSRF).
        let response = panel
            .http
            .post(panel.server.url("/admin/login"))
            .header(ORIGIN, origin)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form(&[("password", &panel.server.admin_password)]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "login from {origin}");
        assert!(response.headers().get(SET_COOKIE).is_none());
    }
    assert_eq!(panel.app_count().await, 0);
    assert!(panel.service_key_unchanged().await);
    // Its own origin is fine.
    let fields = [("csrf", panel.csrf.as_str()), ("name", "Billing"), ("label", "billing")];
    assert_eq!(panel.post("/admin/apps", &fields).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(panel.app_count().await, 1);
    panel.server.stop().await;
}

/// The new-application form sets `credits_low_threshold` (the level of the
/// `key.credits_low` event); a threshold that is not a whole number of at least one
/// credit is refused next to its field, and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_form_sets_the_credits_low_threshold() {
    let panel = Panel::start().await;
    for bad in ["0", "many", "-3"] {
        let fields = [("csrf", panel.csrf.as_str()), ("name", "A"), ("label", "a"), ("credits_low_threshold", bad)];
        let response = panel.post("/admin/apps", &fields).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            response.text().await.unwrap().contains("id=\"credits-low-error\""),
            "{bad}: the error is by its field"
        );
    }
    assert_eq!(panel.app_count().await, 0);
    let fields = [("csrf", panel.csrf.as_str()), ("name", "A"), ("label", "a"), ("credits_low_threshold", " 25 ")];
    assert_eq!(panel.post("/admin/apps", &fields).send().await.unwrap().status(), StatusCode::OK);
    let (_, list) = common::json_of(panel.server.admin(Method::GET, "/v1/apps").send().await.unwrap()).await;
    assert_eq!(list["apps"][0]["credits_low_threshold"], 25, "{list}");
    panel.server.stop().await;
}

/// Editing a key's name keeps its expiry to the microsecond: the form shows only the
/// date, and a date left as it was is not sent back (it would mean midnight). A date
/// changed in the form is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_key_keeps_an_expiry_whose_date_was_not_changed() {
    let panel = Panel::start().await;
    let (app, _) = panel.server.create_app(json!({"name": "A", "label": "a"})).await;
    let app_id = app["id"].as_str().unwrap();
    let (_, record) = panel.server.create_key(app_id, json!({"name": "old", "expires_in_days": 10})).await;
    let (key_id, expires_at) = (record["id"].as_str().unwrap(), record["expires_at"].as_str().unwrap());
    let date = &expires_at[..10];
    let edit = format!("/admin/keys/{key_id}/edit");
    let fields = [("csrf", panel.csrf.as_str()), ("name", "new"), ("expires_on", date), ("expires_was", date)];
    assert_eq!(panel.post(&edit, &fields).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    let response = panel.server.admin(Method::GET, &format!("/v1/keys/{key_id}")).send().await.unwrap();
    let (_, key) = common::json_of(response).await;
    assert_eq!((key["name"].as_str(), key["expires_at"].as_str()), (Some("new"), Some(expires_at)));
    let fields = [("csrf", panel.csrf.as_str()), ("name", "new"), ("expires_on", "2099-01-31"), ("expires_was", date)];
    assert_eq!(panel.post(&edit, &fields).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    let response = panel.server.admin(Method::GET, &format!("/v1/keys/{key_id}")).send().await.unwrap();
    let (_, key) = common::json_of(response).await;
    assert_eq!(key["expires_at"].as_str(), Some("2099-01-31T00:00:00Z"), "a changed date is sent");
    panel.server.stop().await;
}

/// A refill is set in the new-key form, shown in the key's row, changed or removed in
/// the edit form, and left alone when sent back unchanged (setting it again would
/// restore the credits); a refill that does not parse is refused next to its field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_is_set_shown_and_changed_in_the_panel() {
    let panel = Panel::start().await;
    let (app, _) = panel.server.create_app(json!({"name": "A", "label": "a"})).await;
    let app_id = app["id"].as_str().unwrap();
    let new_key = format!("/admin/apps/{app_id}/keys");
    let fields = [("csrf", panel.csrf.as_str()), ("name", "quota"), ("refill", "100/monthly:15")];
    let response = panel.post(&new_key, &fields).send().await.unwrap();
    assert!(response.status().is_success() || response.status().is_redirection(), "{}", response.status());
    let html = panel.get(&format!("/admin/apps/{app_id}")).send().await.unwrap().text().await.unwrap();
    for line in ["100 left", "100/monthly:15", "next "] {
        assert!(html.contains(&format!("<span class=\"small muted\">{line}")), "the row shows {line:?}");
    }
    let bad = [("csrf", panel.csrf.as_str()), ("name", "bad"), ("refill", "100/fortnightly")];
    let response = panel.post(&new_key, &bad).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("id=\"k-refill-error\""));

    let response = panel.server.admin(Method::GET, &format!("/v1/apps/{app_id}/keys")).send().await.unwrap();
    let (_, list) = common::json_of(response).await;
    let key_id = list["keys"][0]["id"].as_str().unwrap().to_owned();
    let credits = format!("/v1/keys/{key_id}/credits");
    panel.server.admin(Method::POST, &credits).json(&json!({"op": "set", "amount": 7})).send().await.unwrap();
    let edit = format!("/admin/keys/{key_id}/edit");
    let page = panel.get(&edit).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("value=\"100/monthly:15\""), "the edit form shows the refill");
    let same = [
        ("csrf", panel.csrf.as_str()),
        ("name", "quota"),
        ("refill", "100/monthly:15"),
        ("refill_was", "100/monthly:15"),
    ];
    assert_eq!(panel.post(&edit, &same).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    let (_, key) =
        common::json_of(panel.server.admin(Method::GET, &format!("/v1/keys/{key_id}")).send().await.unwrap()).await;
    assert_eq!(key["remaining"], 7, "an unchanged refill is not sent: {key}");
    let daily =
        [("csrf", panel.csrf.as_str()), ("name", "quota"), ("refill", "20/daily"), ("refill_was", "100/monthly:15")];
    assert_eq!(panel.post(&edit, &daily).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    let (_, key) =
        common::json_of(panel.server.admin(Method::GET, &format!("/v1/keys/{key_id}")).send().await.unwrap()).await;
    assert_eq!((&key["remaining"], &key["refill"]["interval"]), (&json!(20), &json!("daily")), "{key}");
    let none = [("csrf", panel.csrf.as_str()), ("name", "quota"), ("refill", ""), ("refill_was", "20/daily")];
    assert_eq!(panel.post(&edit, &none).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    let (_, key) =
        common::json_of(panel.server.admin(Method::GET, &format!("/v1/keys/{key_id}")).send().await.unwrap()).await;
    assert_eq!((&key["remaining"], &key["refill"]), (&json!(20), &Value::Null), "{key}");
    panel.server.stop().await;
}

/// The key ids listed on an application page, and its "Older keys" link.
fn listed_keys(html: &str) -> (Vec<String>, Option<String>) {
    let ids = html.split("id=\"masked-").skip(1).map(|rest| rest.split('"').next().unwrap().to_owned()).collect();
    let next = html.split("\">Older keys</a>").next().filter(|_| html.contains(">Older keys</a>")).map(|before| {
        let href = before.rsplit("href=\"").next().unwrap();
        href.replace("&amp;", "&").replace("&#38;", "&")
    });
    (ids, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_page_lists_every_key_page_by_page_and_searches_names_and_owners() {
    let panel = Panel::start().await;
    let (app, _) = panel.server.create_app(json!({"name": "A", "label": "a", "max_active_keys_per_owner": 1000})).await;
    let app_id = app["id"].as_str().unwrap();
    let mut created = Vec::new();
    for i in 0..73 {
        let name = if i % 10 == 3 { format!("Deploy {i}") } else { format!("key {i}") };
        let (_, record) =
            panel.server.create_key(app_id, json!({"name": name, "owner_id": format!("user_{}", i % 4)})).await;
        created.push(record["id"].as_str().unwrap().to_owned());
    }
    let revoked = &created[..2];
    for id in revoked {
        let response = panel.server.admin(Method::POST, &format!("/v1/keys/{id}/revoke")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    // Every active key, newest first, 50 to a page.
    let mut seen = Vec::new();
    let mut next = Some(format!("/admin/apps/{app_id}"));
    let mut pages = 0;
    while let Some(path) = next.take() {
        let page = panel.get(&path).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        let (ids, link) = listed_keys(&page.text().await.unwrap());
        assert!(ids.len() <= 50);
        seen.extend(ids);
        next = link;
        pages += 1;
    }
    let mut active: Vec<String> = created[2..].to_vec();
    active.reverse();
    assert_eq!((pages, &seen), (2, &active), "71 active keys on two pages, newest first");

    // The search finds names and owners in any case; the status filter narrows it.
    let html = panel.get(&format!("/admin/apps/{app_id}?q=DEPLOY")).send().await.unwrap().text().await.unwrap();
    assert_eq!(listed_keys(&html).0.len(), 7, "Deploy 3, 13, ... 63");
    let html =
        panel.get(&format!("/admin/apps/{app_id}?q=user_1&status=all")).send().await.unwrap().text().await.unwrap();
    assert_eq!(listed_keys(&html).0.len(), 18, "user_1 owns keys 1, 5, ... 69");
    let html = panel.get(&format!("/admin/apps/{app_id}?status=revoked")).send().await.unwrap().text().await.unwrap();
    let mut listed = listed_keys(&html).0;
    listed.sort();
    let mut expected = revoked.to_vec();
    expected.sort();
    assert_eq!(listed, expected);
    let page = panel.get(&format!("/admin/apps/{app_id}?cursor=not-a-key")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    panel.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_page_shows_the_earlier_formats_that_still_verify() {
    let panel = Panel::start().await;
    let body = json!({"name": "A", "label": "a", "template": "sk_{secret:32:hex}"});
    let (plain, _) = panel.server.create_app(body).await;
    let page = panel.get(&format!("/admin/apps/{}", plain["id"].as_str().unwrap())).send().await.unwrap();
    assert!(!page.text().await.unwrap().contains("Earlier formats"), "none to show");

    let legacy = ["{secret:43:base64url}", "old-{label}-{secret:32:hex}"];
    let body = json!({"name": "B", "label": "b", "template": "sk_{secret:32:hex}", "legacy_templates": legacy});
    let (app, _) = panel.server.create_app(body).await;
    let page = panel.get(&format!("/admin/apps/{}", app["id"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let shown = "Earlier formats, still verified: <code>{secret:43:base64url}</code> · <code>old-{label}-{secret:32:hex}</code>";
    assert!(html.contains(shown), "{html}");
    panel.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_page_turns_recoverable_keys_on_and_off() {
    let panel = Panel::start().await;
    let (app, _) = panel.server.create_app(json!({"name": "A", "label": "a"})).await;
    let app_id = app["id"].as_str().unwrap();
    let recoverable = || async {
        let response = panel.server.admin(Method::GET, &format!("/v1/apps/{app_id}")).send().await.unwrap();
        common::json_of(response).await.1["app"]["recoverable"].clone()
    };
    let path = format!("/admin/apps/{app_id}/recoverable");
    let page = panel.post(&path, &[("csrf", &panel.csrf), ("recoverable", "on")]).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Stop keeping keys"));
    assert_eq!(recoverable().await, json!(true));
    let (key, record) = panel.server.create_key(app_id, json!({})).await;
    let reveal = format!("/v1/keys/{}/reveal", record["id"].as_str().unwrap());
    let (_, revealed) = common::json_of(panel.server.admin(Method::POST, &reveal).send().await.unwrap()).await;
    assert_eq!(revealed["key"].as_str(), Some(key.as_str()));

    let page = panel.post(&path, &[("csrf", &panel.csrf), ("recoverable", "off")]).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Keep new keys recoverable"));
    assert_eq!(recoverable().await, json!(false));
    let (status, _) = common::json_of(panel.server.admin(Method::POST, &reveal).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let page = panel.post(&path, &[("csrf", &panel.csrf), ("recoverable", "maybe")]).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    panel.server.stop().await;
}

/// The secret shown in a page's secret dialog.
fn shown_secret(html: &str) -> String {
    let secret = html.split("id=\"secret-value\"").nth(1).and_then(|rest| rest.split('>').nth(1)).expect("a secret");
    secret.split('<').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_tokens_page_makes_a_token_shown_once_lists_it_and_revokes_it() {
    let panel = Panel::start().await;
    let apps = panel.get("/admin/apps").send().await.unwrap().text().await.unwrap();
    assert!(apps.contains("href=\"/admin/tokens\""), "the navigation links the page");
    let page = panel.get("/admin/tokens").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("No management tokens yet."));

    // Without the session's CSRF token: refused, nothing made.
    let response = panel.post("/admin/tokens", &[("name", "ci")]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // A bad name: the form again, the error next to the field.
    let response = panel.post("/admin/tokens", &[("csrf", &panel.csrf), ("name", "with space")]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(html.contains("id=\"name-error\""), "{html}");
    let response =
        panel.post("/admin/tokens", &[("csrf", &panel.csrf), ("name", "ci"), ("expires_in_days", "soon")]).send();
    let html = response.await.unwrap().text().await.unwrap();
    assert!(html.contains("id=\"expires-error\""), "{html}");

    // Made: shown once in the dialog, in the answer to the POST.
    let fields = [("csrf", panel.csrf.as_str()), ("name", "ci"), ("expires_in_days", "30")];
    let response = panel.post("/admin/tokens", &fields).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "shown, not redirected");
    let token = shown_secret(&response.text().await.unwrap());
    assert!(token.starts_with("kp_mgmt_"), "{token}");
    let response = panel.server.anon(Method::GET, "/v1/apps").bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the token works");
    let html = panel.get("/admin/tokens").send().await.unwrap().text().await.unwrap();
    assert!(html.contains("<td data-label=\"Name\" class=\"mono\">ci</td>"), "{html}");
    assert!(html.contains("just now"), "its last use: {html}");
    assert!(!html.contains(&token), "listed, never shown again");
    let response = panel.post("/admin/tokens", &fields).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT, "one live token per name");

    // Revoked: refused at once.
    let revoke = html.split("action=\"/admin/tokens/").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let response = panel.post(&format!("/admin/tokens/{revoke}"), &[]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "revoking needs the CSRF token too");
    let response = panel.post(&format!("/admin/tokens/{revoke}"), &[("csrf", &panel.csrf)]).send().await.unwrap();
    assert_eq!(
        (response.status(), location(&response)),
        (StatusCode::SEE_OTHER, "/admin/tokens?ok=token_revoked".into())
    );
    let response = panel.server.anon(Method::GET, "/v1/apps").bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = panel.post(&format!("/admin/tokens/{revoke}"), &[("csrf", &panel.csrf)]).send().await.unwrap();
    assert_eq!(location(&response), "/admin/tokens?err=token_not_found");
    let response = panel.post("/admin/tokens/not-an-id/revoke", &[("csrf", &panel.csrf)]).send().await.unwrap();
    assert_eq!(location(&response), "/admin/tokens?err=token_not_found");
    panel.server.stop().await;
}

#[tokio::test]
async fn the_usage_dashboard_charts_outcomes_and_lists_the_top_keys_owners_and_tags() {
    let panel = Panel::start().await;
    let (app, secret) = panel.server.create_app(json!({"name": "Shop", "label": "shop"})).await;
    let app_id = app["id"].as_str().unwrap();
    let (busy, record) = panel.server.create_key(app_id, json!({"name": "busy", "owner_id": "alice"})).await;
    let (quota, _) = panel.server.create_key(app_id, json!({"name": "quota", "owner_id": "bob", "remaining": 1})).await;
    for _ in 0..3 {
        panel.server.verify(&busy, &secret, json!({"tags": ["GET /orders"]})).await;
    }
    panel.server.verify(&quota, &secret, json!({"tags": ["GET /cart"]})).await;
    panel.server.verify(&quota, &secret, json!({})).await;

    let app_page = panel.get(&format!("/admin/apps/{app_id}")).send().await.unwrap().text().await.unwrap();
    assert!(app_page.contains(&format!("href=\"/admin/apps/{app_id}/usage\"")), "the application links its dashboard");

    let response = panel.get(&format!("/admin/apps/{app_id}/usage")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
    assert!(csp.contains("style-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(html.contains("<h1>Usage of Shop</h1>"), "{html}");
    // The dashboard flushes pending counts first, so the five verifications are there.
    assert!(
        html.contains("<title>5 verifications over 24 hours: 4 valid, 0 rate limited, 1 out of credits, 0 refused"),
        "{html}"
    );
    assert!(html.contains("<svg class=\"chart\""), "a chart drawn on the server");
    assert!(!html.contains("style=") && !html.contains("<script>"), "nothing the CSP forbids");
    let key_id = record["id"].as_str().unwrap();
    assert!(html.contains(&format!("<a href=\"/admin/keys/{key_id}/edit\">busy (")), "the top key links its page");
    for text in ["alice", "bob", "GET /orders", "GET /cart", "aria-current=\"page\">24 hours"] {
        assert!(html.contains(text), "{text}: {html}");
    }
    // Longer ranges count per day; an unknown range is the default.
    let month = panel.get(&format!("/admin/apps/{app_id}/usage?range=30d")).send().await.unwrap().text().await.unwrap();
    assert!(month.contains("<title>5 verifications over 30 days:"), "{month}");
    let odd = panel.get(&format!("/admin/apps/{app_id}/usage?range=forever")).send().await.unwrap();
    assert_eq!(odd.status(), StatusCode::OK);
    assert!(odd.text().await.unwrap().contains("over 24 hours"));

    // The key's own history, on its page.
    let page = panel.get(&format!("/admin/keys/{key_id}/edit")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<h2>Last 30 days</h2>"), "{page}");
    assert!(page.contains("<title>3 verifications over 30 days: 3 valid"), "{page}");

    // Strangers are sent to the login page; an unknown application is not found.
    let stranger = client().get(panel.server.url(&format!("/admin/apps/{app_id}/usage"))).send().await.unwrap();
    assert_eq!(stranger.status(), StatusCode::SEE_OTHER);
    let unknown = panel.get(&format!("/admin/apps/{}/usage", uuid::Uuid::now_v7())).send().await.unwrap();
    assert!(unknown.status().is_redirection() || unknown.status() == StatusCode::NOT_FOUND, "{}", unknown.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_pages_make_edit_test_and_delete_a_webhook_with_its_secret_shown_once() {
    let mut config = common::config(Db::Sqlite);
    config.webhooks_allow_private = true;
    let panel = Panel::start_with(config).await;
    let apps = panel.get("/admin/apps").send().await.unwrap().text().await.unwrap();
    assert!(apps.contains("href=\"/admin/webhooks\""), "the navigation links the page");
    let html = panel.get("/admin/webhooks").send().await.unwrap().text().await.unwrap();
    assert!(html.contains("No webhooks yet."), "{html}");

    // Without the CSRF token: refused. Without an event: the form again, the error shown.
    let url = "http://127.0.0.1:9/hook";
    let response = panel.post("/admin/webhooks", &[("url", url), ("event:key.revoked", "on")]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = panel.post("/admin/webhooks", &[("csrf", &panel.csrf), ("url", url)]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("must name at least one event type"));
    let response = panel
        .post("/admin/webhooks", &[("csrf", &panel.csrf), ("url", "ftp://x"), ("event:key.revoked", "on")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("id=\"url-error\""));

    // Made: the secret shown once, in the answer to the POST.
    let fields = [
        ("csrf", panel.csrf.as_str()),
        ("url", url),
        ("description", "ops pager"),
        ("event:key.revoked", "on"),
        ("event:key.expiring", "on"),
    ];
    let response = panel.post("/admin/webhooks", &fields).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let secret = shown_secret(&response.text().await.unwrap());
    assert!(secret.starts_with("whsec_"), "{secret}");
    let html = panel.get("/admin/webhooks").send().await.unwrap().text().await.unwrap();
    assert!(html.contains("key.revoked, key.expiring") && html.contains("ops pager"), "{html}");
    assert!(!html.contains(&secret), "never shown again");
    let id = html.split("href=\"/admin/webhooks/").nth(1).unwrap().split('"').next().unwrap().to_owned();

    // Its page: edited (disabled, one event), shown disabled; a test event's delivery listed with a retry.
    let page = format!("/admin/webhooks/{id}");
    let edit = [("csrf", panel.csrf.as_str()), ("url", url), ("event:key.created", "on")];
    let response = panel.post(&page, &edit).send().await.unwrap();
    assert_eq!((response.status(), location(&response)), (StatusCode::SEE_OTHER, format!("{page}?ok=webhook_updated")));
    let html = panel.get("/admin/webhooks").send().await.unwrap().text().await.unwrap();
    assert!(html.contains("badge bad\">Disabled") && html.contains("disabled by an administrator"), "{html}");
    let response = panel.post(&format!("{page}/test"), &[("csrf", &panel.csrf)]).send().await.unwrap();
    assert_eq!(location(&response), format!("{page}?ok=webhook_test_sent"));
    let html = panel.get(&page).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("<code>webhook.test</code>") && html.contains("/retry\""), "{html}");
    let rotated = panel.post(&format!("{page}/secret"), &[("csrf", &panel.csrf)]).send().await.unwrap();
    let new_secret = shown_secret(&rotated.text().await.unwrap());
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);

    let response = panel.post(&format!("{page}/delete"), &[("csrf", &panel.csrf)]).send().await.unwrap();
    assert_eq!(location(&response), "/admin/webhooks?ok=webhook_deleted");
    let response = panel.post(&format!("{page}/delete"), &[("csrf", &panel.csrf)]).send().await.unwrap();
    assert_eq!(location(&response), "/admin/webhooks?err=webhook_not_found");
    assert_eq!(panel.get("/admin/webhooks/not-an-id").send().await.unwrap().status(), StatusCode::NOT_FOUND);
    panel.server.stop().await;
}
