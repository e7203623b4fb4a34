//! The admin panel in a real headless Chromium, driven over the DevTools protocol: a
//! person's whole walk through it (log in, applications, keys, client secret, service
//! key, log out) at desktop and phone widths, with the keyboard where a person would use
//! it, and cross-site form posts that must be refused.
//!
//! The browser is Debian's `chromium` (`.ci/run` installs it), or the one named by
//! `CHROMIUM`. Without one these tests fail under `CI=true` and are skipped elsewhere.
//! Screenshots of the main pages land in `target/screenshots/`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::browser_protocol::network::CookieParam;
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::js_protocol::runtime::{ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, BrowserConfig, Page};
use common::{Db, TestServer, json_of};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::task::JoinHandle;

const DESKTOP: (i64, i64) = (1280, 900);
const PHONE: (i64, i64) = (360, 740);
/// How long a page may take to do what a step waits for.
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- the browser

/// The Chromium to drive, or `None` (with the reason printed) when the test is skipped.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.is_file() {
        return Some(path);
    }
    let reason = format!(
        "no Chromium at {} (install Debian's chromium package, or set CHROMIUM to a Chromium binary)",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{reason}: the browser tests must run in CI");
    }
    eprintln!("skipping the browser test: {reason}");
    None
}

/// Where screenshots go: `target/screenshots/`.
fn screenshot_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"), Path::to_path_buf);
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// A headless Chromium with a profile of its own.
struct Chrome {
    browser: Browser,
    handler: JoinHandle<()>,
}

impl Chrome {
    async fn launch(executable: &Path) -> Chrome {
        let profile = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("chromium-profiles")
            .join(uuid::Uuid::now_v7().simple().to_string());
        std::fs::create_dir_all(&profile).expect("profile directory");
        let config = BrowserConfig::builder()
            .chrome_executable(executable)
            .no_sandbox()
            .new_headless_mode()
            .user_data_dir(&profile)
            .window_size(DESKTOP.0 as u32, DESKTOP.1 as u32)
            .viewport(Viewport {
                width: DESKTOP.0 as u32,
                height: DESKTOP.1 as u32,
                device_scale_factor: Some(1.0),
                emulating_mobile: false,
                is_landscape: true,
                has_touch: false,
            })
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .launch_timeout(Duration::from_secs(60))
            .build()
            .expect("browser config");
        let (browser, mut handler) = Browser::launch(config).await.expect("Chromium did not start");
        let handler = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if let Err(e) = event {
                    eprintln!("devtools: {e}");
                }
            }
        });
        Chrome { browser, handler }
    }

    /// A new tab whose console errors are collected into `console`.
    async fn page(&self, console: &Console) -> Page {
        let page = self.browser.new_page("about:blank").await.expect("a new tab");
        console.watch(&page).await;
        page
    }

    async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

/// Errors a page reported: uncaught exceptions, `console.error` and browser log errors
/// (CSP violations and failed loads show up there).
#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<String>>>);

impl Console {
    async fn watch(&self, page: &Page) {
        page.enable_log().await.expect("Log domain");
        page.enable_runtime().await.expect("Runtime domain");
        let mut exceptions = page.event_listener::<EventExceptionThrown>().await.expect("listener");
        let mut calls = page.event_listener::<EventConsoleApiCalled>().await.expect("listener");
        let mut entries = page.event_listener::<EventEntryAdded>().await.expect("listener");
        let errors = self.0.clone();
        tokio::spawn(async move {
            while let Some(event) = exceptions.next().await {
                let details = &event.exception_details;
                let description = details.exception.as_ref().and_then(|e| e.description.clone()).unwrap_or_default();
                errors.lock().unwrap().push(format!("exception: {} {description}", details.text));
            }
        });
        let errors = self.0.clone();
        tokio::spawn(async move {
            while let Some(event) = calls.next().await {
                if event.r#type == ConsoleApiCalledType::Error {
                    let args: Vec<String> = event
                        .args
                        .iter()
                        .map(|a| {
                            a.value
                                .as_ref()
                                .map_or_else(|| a.description.clone().unwrap_or_default(), |v| v.to_string())
                        })
                        .collect();
                    errors.lock().unwrap().push(format!("console.error: {}", args.join(" ")));
                }
            }
        });
        let errors = self.0.clone();
        tokio::spawn(async move {
            while let Some(event) = entries.next().await {
                if event.entry.level == LogEntryLevel::Error {
                    let entry = &event.entry;
                    let url = entry.url.clone().unwrap_or_default();
                    errors.lock().unwrap().push(format!("log ({:?}): {} {url}", entry.source, entry.text));
                }
            }
        });
    }

    /// The errors so far, forgetting them.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// Asserts that the page reported no error since the last look.
    async fn assert_clean(&self, step: &str) {
        // Events arrive asynchronously: give the last ones a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let errors = self.take();
        assert!(errors.is_empty(), "{step}: the browser reported errors: {errors:#?}");
    }
}

// ---------------------------------------------------------------- page helpers

/// Runs `js` in the page and returns its value.
async fn eval<T: DeserializeOwned>(page: &Page, js: &str) -> T {
    let result = tokio::time::timeout(PATIENCE, page.evaluate(js))
        .await
        .unwrap_or_else(|_| panic!("{js}: no answer"))
        .unwrap_or_else(|e| panic!("{js}: {e}"));
    result.into_value().unwrap_or_else(|e| panic!("{js}: {e}"))
}

/// Waits until `js` is true (retrying while a navigation replaces the document).
async fn wait_until(page: &Page, js: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(5), page.evaluate(js)).await;
        if let Ok(Ok(result)) = answer
            && result.into_value::<bool>().unwrap_or(false)
        {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let at: String = eval(page, "location.href").await;
            panic!("timed out waiting for `{js}` (at {at})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Marks the current document, so `arrived` can tell when another one has loaded.
async fn leaving(page: &Page) {
    let _: bool = eval(page, "window.__leaving = true").await;
}

/// Waits for the document that replaced the marked one to finish loading.
async fn arrived(page: &Page) {
    wait_until(page, "window.__leaving === undefined && document.readyState === 'complete'").await;
}

/// Opens `url` and waits for it to load.
async fn open(page: &Page, url: &str) {
    tokio::time::timeout(PATIENCE, page.goto(url))
        .await
        .unwrap_or_else(|_| panic!("{url}: no answer"))
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    wait_until(page, "document.readyState === 'complete'").await;
}

/// Clicks the element `selector` the way a mouse does.
async fn click(page: &Page, selector: &str) {
    let element = page.find_element(selector).await.unwrap_or_else(|e| panic!("no {selector}: {e}"));
    element.click().await.unwrap_or_else(|e| panic!("clicking {selector}: {e}"));
}

/// Clicks `selector` and waits for the page it leads to.
async fn click_through(page: &Page, selector: &str) {
    leaving(page).await;
    click(page, selector).await;
    arrived(page).await;
}

/// Clicks into the field `selector`, empties it, and types `text`.
async fn fill(page: &Page, selector: &str, text: &str) {
    let _: bool = eval(page, &format!("(document.querySelector({selector:?}).value = '') === ''")).await;
    let element = page.find_element(selector).await.unwrap_or_else(|e| panic!("no {selector}: {e}"));
    element.click().await.unwrap_or_else(|e| panic!("clicking {selector}: {e}"));
    element.type_str(text).await.unwrap_or_else(|e| panic!("typing into {selector}: {e}"));
}

/// Presses a key in whatever has the focus.
async fn press(page: &Page, key: &str) {
    let body = page.find_element("body").await.expect("a body");
    body.press_key(key).await.unwrap_or_else(|e| panic!("pressing {key}: {e}"));
}

/// The path and query of the page.
async fn location(page: &Page) -> String {
    eval(page, "location.pathname + location.search").await
}

/// The text of the element `selector` (empty when it is missing).
async fn text_of(page: &Page, selector: &str) -> String {
    eval(page, &format!("(document.querySelector({selector:?}) || {{}}).textContent || ''")).await
}

/// Whether `selector` is shown (laid out with a size).
async fn visible(page: &Page, selector: &str) -> bool {
    eval(
        page,
        &format!(
            "(() => {{ const e = document.querySelector({selector:?}); \
             if (!e) return false; const r = e.getBoundingClientRect(); \
             return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden'; }})()"
        ),
    )
    .await
}

/// Waits for the secret dialog, reads the secret from it, and closes it (with Escape
/// when `escape`, else with its Done button).
async fn read_secret_modal(page: &Page, escape: bool) -> String {
    wait_until(page, "document.querySelector('dialog.secret')?.open === true").await;
    assert!(visible(page, "#secret-value").await, "the secret is shown");
    let secret: String = eval(page, "document.getElementById('secret-value').value").await;
    assert!(!secret.is_empty(), "a secret in the modal");
    if escape {
        press(page, "Escape").await;
    } else {
        click(page, "dialog.secret [data-close]").await;
    }
    wait_until(page, "document.querySelector('dialog.secret').open === false").await;
    // Closed, it leaves the page.
    wait_until(page, "document.getElementById('secret-value').value === ''").await;
    secret
}

/// Confirms the open confirmation dialog after checking its text, and waits for the
/// page the form leads to.
async fn confirm(page: &Page, expected: &str) {
    wait_until(page, "document.getElementById('confirm').open === true").await;
    let question = text_of(page, "#confirm-text").await;
    assert!(question.contains(expected), "the confirmation says {question:?}, expected {expected:?}");
    click_through(page, "#confirm-yes").await;
}

/// Makes the viewport `size` wide and tall. (Not emulating a phone's zooming: content
/// too wide for the screen then shows as a page wider than it.)
async fn resize(page: &Page, (width, height): (i64, i64)) {
    let params = SetDeviceMetricsOverrideParams::builder()
        .width(width)
        .height(height)
        .device_scale_factor(1.0)
        .mobile(false)
        .build()
        .expect("device metrics");
    page.execute(params).await.expect("resize");
    wait_until(page, &format!("window.innerWidth === {width}")).await;
}

/// A full-page PNG of the page in `target/screenshots/{name}.png`.
async fn screenshot(page: &Page, name: &str) {
    let path = screenshot_dir().join(format!("{name}.png"));
    let params = ScreenshotParams::builder().format(CaptureScreenshotFormat::Png).full_page(true).build();
    page.save_screenshot(params, &path).await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
}

/// Takes the page at phone width: asserts the page does not scroll sideways, saves a
/// screenshot, and goes back to desktop width.
async fn at_phone_width(page: &Page, name: &str) {
    resize(page, PHONE).await;
    let width: i64 = eval(page, "document.documentElement.scrollWidth").await;
    let wide: Vec<String> = eval(
        page,
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 361)\
         .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)",
    )
    .await;
    screenshot(page, name).await;
    assert!(width <= PHONE.0, "{name}: the page is {width}px wide at {}px; too wide: {wide:?}", PHONE.0);
    resize(page, DESKTOP).await;
}

/// Asserts the keys table fits its card at desktop width (no sideways scrolling).
async fn assert_keys_table_fits(page: &Page) {
    let (table, room): (u32, u32) = eval(
        page,
        "[document.querySelector('table.keys').scrollWidth, document.querySelector('.table-wrap').clientWidth]",
    )
    .await;
    assert!(table <= room, "at desktop width the keys table fits without scrolling: {table}px in {room}px");
}

/// Logs in on the login page the browser is at, with the keyboard: Tab to the password
/// field, type, Enter.
async fn log_in_with_keyboard(page: &Page, password: &str) {
    let _: bool = eval(page, "(document.activeElement.blur(), true)").await;
    let mut tabs = 0;
    while eval::<String>(page, "document.activeElement.id").await != "password" {
        tabs += 1;
        assert!(tabs <= 5, "Tab never reached the password field");
        press(page, "Tab").await;
    }
    let focused_visibly: bool = eval(page, "document.activeElement.matches(':focus-visible')").await;
    assert!(focused_visibly, "the focused field shows its focus");
    page.find_element("#password").await.unwrap().type_str(password).await.unwrap();
    leaving(page).await;
    press(page, "Enter").await;
    arrived(page).await;
}

/// `POST /v1/verify` with a service key: (status, code).
async fn verify_with(server: &TestServer, service_key: &str, key: &str, client_secret: &str) -> (StatusCode, String) {
    let response = server
        .anon(Method::POST, "/v1/verify")
        .bearer_auth(service_key)
        .json(&json!({"key": key, "client_secret": client_secret}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    let code = body["code"].as_str().or_else(|| body["error"]["code"].as_str()).unwrap_or_default().to_owned();
    (status, code)
}

// ---------------------------------------------------------------- the walk-through

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_walks_through_the_panel() {
    let Some(executable) = chromium() else { return };
    let server = TestServer::start(Db::Sqlite).await;
    let chrome = Chrome::launch(&executable).await;
    let console = Console::default();
    let page = chrome.page(&console).await;
    let base = server.base.clone();

    // Not logged in: the panel sends us to the login page.
    open(&page, &format!("{base}/admin")).await;
    assert_eq!(location(&page).await, "/admin/login?next=/admin/apps");
    assert!(eval::<bool>(&page, "document.activeElement.id === 'password'").await, "the password field has focus");
    screenshot(&page, "login").await;
    at_phone_width(&page, "login-phone").await;
    console.assert_clean("login page").await;

    // A wrong password: an error, still on the login page.
    log_in_with_keyboard(&page, "not the password").await;
    assert!(location(&page).await.starts_with("/admin/login"));
    assert_eq!(text_of(&page, "[role=alert]").await, "Wrong password.");
    // The failed login's 401 is the only thing the browser logged.
    let errors = console.take();
    assert!(errors.iter().all(|e| e.contains("401")), "{errors:#?}");

    // The right one, with the keyboard.
    log_in_with_keyboard(&page, &server.admin_password).await;
    assert_eq!(location(&page).await, "/admin/apps");
    assert!(text_of(&page, "main").await.contains("No applications yet"));
    console.assert_clean("login").await;

    // A bad label: the error is shown next to the field, and what was typed is kept.
    fill(&page, "#name", "Billing").await;
    fill(&page, "#label", "Bad Label!").await;
    click_through(&page, "form[action='/admin/apps'] button[type=submit]").await;
    assert!(visible(&page, "#label-error").await, "the label's error is shown");
    assert_eq!(text_of(&page, "#label-error").await, "must be 1 to 32 of a-z, 0-9 and -");
    assert_eq!(eval::<String>(&page, "document.activeElement.id").await, "label", "the field to fix has the focus");
    assert_eq!(eval::<String>(&page, "document.getElementById('label').getAttribute('aria-invalid')").await, "true");
    assert_eq!(eval::<String>(&page, "document.getElementById('name').value").await, "Billing");
    screenshot(&page, "apps-validation").await;
    let errors = console.take();
    assert!(errors.iter().all(|e| e.contains("400")), "{errors:#?}");

    // Fixed: the application is created and its client secret shown once. It keeps its
    // keys recoverable (the checkbox ticked with the space bar).
    fill(&page, "#label", "billing").await;
    let _: bool = eval(&page, "(document.getElementById('recoverable').focus(), true)").await;
    press(&page, " ").await;
    assert!(eval::<bool>(&page, "document.getElementById('recoverable').checked").await);
    click_through(&page, "form[action='/admin/apps'] button[type=submit]").await;
    wait_until(&page, "document.querySelector('dialog.secret')?.open === true").await;
    assert_eq!(eval::<String>(&page, "document.activeElement.id").await, "secret-value", "the modal takes the focus");
    screenshot(&page, "client-secret-modal").await;
    let mut client_secret = read_secret_modal(&page, true).await;
    assert!(text_of(&page, ".grid").await.contains("Billing"));
    screenshot(&page, "apps").await;
    at_phone_width(&page, "apps-phone").await;
    console.assert_clean("applications").await;

    // The application's page.
    click_through(&page, ".card.app h2 a").await;
    let app_path = location(&page).await;
    assert!(app_path.starts_with("/admin/apps/"), "{app_path}");
    assert!(text_of(&page, "main").await.contains("No keys match."));

    // A key, created with the form and read from the modal.
    fill(&page, "#k-name", "CI pipeline").await;
    fill(&page, "#k-owner", "alice").await;
    fill(&page, "#k-scopes", "billing:read billing:write").await;
    fill(&page, "#k-metadata", r#"{"team": "payments"}"#).await;
    click_through(&page, "form[action$='/keys'] button[type=submit]").await;
    wait_until(&page, "document.querySelector('dialog.secret')?.open === true").await;
    screenshot(&page, "key-modal").await;
    let key = read_secret_modal(&page, false).await;
    assert_eq!(verify_with(&server, &server.service_key, &key, &client_secret).await, (StatusCode::OK, "VALID".into()));
    // Reloading the page does not post the form again.
    assert_eq!(location(&page).await, app_path, "the POST's address is replaced by the page's");
    leaving(&page).await;
    page.reload().await.expect("reload");
    arrived(&page).await;
    assert_eq!(eval::<u32>(&page, "document.querySelectorAll('table.keys tbody tr').length").await, 1);
    assert!(!visible(&page, "dialog.secret").await, "no secret after a reload");
    assert_keys_table_fits(&page).await;
    screenshot(&page, "app").await;
    at_phone_width(&page, "app-phone").await;
    console.assert_clean("the key").await;

    // The key is recoverable: Reveal shows it in full.
    assert!(!text_of(&page, "table.keys").await.contains(&key), "keys are masked");
    click(&page, "[data-reveal-key]").await;
    wait_until(&page, &format!("document.querySelector('table.keys').textContent.includes({key:?})")).await;
    assert_keys_table_fits(&page).await;

    // Edit it: a bad date is pointed out next to its field, then the change is saved.
    click_through(&page, "table.keys a[href$='/edit']").await;
    fill(&page, "#e-name", "CI pipeline (prod)").await;
    fill(&page, "#e-expires", "next year").await;
    click_through(&page, "form[action$='/edit'] button[type=submit]").await;
    assert!(visible(&page, "#e-expires-error").await, "the date's error is shown");
    assert_eq!(eval::<String>(&page, "document.activeElement.id").await, "e-expires");
    screenshot(&page, "edit-key").await;
    let _ = console.take(); // the 400
    fill(&page, "#e-expires", "").await;
    click_through(&page, "form[action$='/edit'] button[type=submit]").await;
    assert_eq!(location(&page).await, format!("{app_path}?ok=updated"));
    assert_eq!(text_of(&page, ".flash").await, "Key updated.");
    assert!(text_of(&page, "table.keys").await.contains("CI pipeline (prod)"));
    assert!(text_of(&page, "table.keys").await.contains("alice"));
    console.assert_clean("editing").await;

    // Rotate it (no grace): the old key stops at once, the new one works.
    click(&page, "form.rotate button[type=submit]").await;
    confirm(&page, "Rotate this key?").await;
    let rotated = read_secret_modal(&page, false).await;
    assert_ne!(rotated, key);
    assert_eq!(verify_with(&server, &server.service_key, &key, &client_secret).await.1, "REVOKED");
    assert_eq!(verify_with(&server, &server.service_key, &rotated, &client_secret).await.1, "VALID");
    console.assert_clean("rotation").await;

    // Revoke the new one, with the keyboard: the dialog starts on Cancel, Tab goes to
    // Confirm, Enter confirms.
    let _: bool = eval(&page, "(document.querySelector(\"form[action$='/revoke'] button\").focus(), true)").await;
    press(&page, "Enter").await;
    wait_until(&page, "document.getElementById('confirm').open === true").await;
    assert!(text_of(&page, "#confirm-text").await.contains("This cannot be undone"));
    assert_eq!(text_of(&page, "dialog#confirm :focus").await, "Cancel", "the safe choice has the focus");
    press(&page, "Tab").await;
    assert_eq!(eval::<String>(&page, "document.activeElement.id").await, "confirm-yes");
    leaving(&page).await;
    press(&page, "Enter").await;
    arrived(&page).await;
    assert_eq!(text_of(&page, ".flash").await, "Key revoked.");
    assert_eq!(verify_with(&server, &server.service_key, &rotated, &client_secret).await.1, "REVOKED");
    console.assert_clean("revocation").await;

    // Another key, then a new client secret: the old secret is refused, the new one works.
    fill(&page, "#k-name", "second").await;
    click_through(&page, "form[action$='/keys'] button[type=submit]").await;
    let second = read_secret_modal(&page, false).await;
    click(&page, "form[action$='/client-secret'] button[type=submit]").await;
    confirm(&page, "Regenerate the client secret?").await;
    let new_secret = read_secret_modal(&page, false).await;
    assert_ne!(new_secret, client_secret);
    let (status, _) = verify_with(&server, &server.service_key, &second, &client_secret).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the old client secret is refused");
    client_secret = new_secret;
    assert_eq!(verify_with(&server, &server.service_key, &second, &client_secret).await.1, "VALID");
    console.assert_clean("client secret").await;

    // Usage: verifications with tags, some refused, then the application's dashboard.
    for (i, endpoint) in
        ["GET /invoices", "GET /invoices", "POST /invoices", "GET /customers"].iter().cycle().take(24).enumerate()
    {
        let key = if i % 6 == 5 { &rotated } else { &second };
        let body = json!({"key": key, "client_secret": client_secret, "tags": [endpoint]});
        let response = server.anon(Method::POST, "/v1/verify").bearer_auth(&server.service_key).json(&body).send();
        assert_eq!(response.await.unwrap().status(), StatusCode::OK);
    }
    open(&page, &format!("{base}{app_path}")).await;
    click_through(&page, "a[href$='/usage']").await;
    assert_eq!(location(&page).await, format!("{app_path}/usage"));
    let dashboard = text_of(&page, "main").await;
    for text in ["Verifications over time", "Top keys", "Top owners", "Top tags", "GET /invoices"] {
        assert!(dashboard.contains(text), "the dashboard shows {text}: {dashboard}");
    }
    let bars: u32 = eval(&page, "document.querySelectorAll('svg.chart rect').length").await;
    assert!(bars >= 2, "the chart has the valid and the refused verifications: {bars} bars");
    screenshot(&page, "usage").await;
    at_phone_width(&page, "usage-phone").await;
    console.assert_clean("usage dashboard").await;
    click_through(&page, "table.ranking a[href$='/edit']").await;
    assert!(text_of(&page, "main").await.contains("Last 30 days"));
    screenshot(&page, "key-history").await;
    at_phone_width(&page, "key-history-phone").await;
    console.assert_clean("a key's history").await;

    // The service key: reveal it, rotate it.
    click_through(&page, "nav a[href='/admin/settings']").await;
    let masked = text_of(&page, "#service-key").await;
    assert!(masked.contains('…') && !masked.contains(&server.service_key), "masked: {masked}");
    screenshot(&page, "settings").await;
    click(&page, "[data-reveal-service-key]").await;
    wait_until(&page, "!document.getElementById('service-key').textContent.includes('…')").await;
    assert_eq!(text_of(&page, "#service-key").await, server.service_key);
    click(&page, "form[action='/admin/service-key/rotate'] button[type=submit]").await;
    confirm(&page, "Rotate the service key?").await;
    let service_key = read_secret_modal(&page, false).await;
    assert_ne!(service_key, server.service_key);
    let (status, _) = verify_with(&server, &server.service_key, &second, &client_secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old service key is refused");
    assert_eq!(verify_with(&server, &service_key, &second, &client_secret).await, (StatusCode::OK, "VALID".into()));
    at_phone_width(&page, "settings-phone").await;
    console.assert_clean("service key").await;

    // The audit log shows what happened.
    click_through(&page, "nav a[href='/admin/audit']").await;
    let log = text_of(&page, "table").await;
    for action in ["created", "rotated", "revoked"] {
        assert!(log.contains(action), "the audit log shows {action}: {log}");
    }
    screenshot(&page, "audit").await;
    at_phone_width(&page, "audit-phone").await;
    console.assert_clean("audit log").await;

    // An expired session: back to the login page, and after it to the page we wanted.
    page.set_cookie(CookieParam::new("keypal_session", "expired")).await.expect("cookie");
    open(&page, &format!("{base}/admin/audit?action=revoked")).await;
    let login = location(&page).await;
    assert!(login.starts_with("/admin/login?next="), "{login}");
    log_in_with_keyboard(&page, &server.admin_password).await;
    assert_eq!(location(&page).await, "/admin/audit?action=revoked");
    assert_eq!(eval::<String>(&page, "document.getElementById('a-action').value").await, "revoked");
    console.assert_clean("a new session").await;

    // Log out: the panel is closed again.
    click_through(&page, "nav form[action='/admin/logout'] button").await;
    assert_eq!(location(&page).await, "/admin/login?ok=logged_out");
    assert_eq!(text_of(&page, ".flash").await, "Logged out.");
    open(&page, &format!("{base}{app_path}")).await;
    assert_eq!(location(&page).await, format!("/admin/login?next={app_path}"));
    console.assert_clean("log out").await;

    chrome.close().await;
    server.stop().await;
}

// ---------------------------------------------------------------- cross-site posts

/// A page of another origin that posts a form to the panel as soon as it loads.
fn attack_page(action: &str, csrf: Option<&str>) -> String {
    let token = csrf.map(|t| format!("<input type=hidden name=csrf value=\"{t}\">")).unwrap_or_default();
    format!(
        "<!doctype html><title>Win a prize</title>\
         <body onload=\"document.forms[0].submit()\">\
         <form method=post action=\"{action}\">{token}<input type=hidden name=grace_seconds value=0></form>"
    )
}

/// Serves `pages` (path → HTML) on another loopback port; returns its base URL.
async fn serve_elsewhere(pages: Vec<(String, String)>) -> String {
    let mut router = axum::Router::new();
    for (path, html) in pages {
        router = router.route(&path, axum::routing::get(move || async move { axum::response::Html(html) }));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_form_posts_are_refused() {
    let Some(executable) = chromium() else { return };
    let mut server = TestServer::start(Db::Sqlite).await;
    server.login().await;
    let (app, client_secret) = server.create_app(json!({"name": "Target", "label": "target"})).await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    let (key, record) = server.create_key(&app_id, json!({"owner_id": "victim"})).await;
    let key_id = record["id"].as_str().unwrap().to_owned();
    let chrome = Chrome::launch(&executable).await;
    let console = Console::default();
    let page = chrome.page(&console).await;
    let base = server.base.clone();

    // The admin is logged in in this browser.
    open(&page, &format!("{base}/admin/apps")).await;
    log_in_with_keyboard(&page, &server.admin_password).await;
    assert_eq!(location(&page).await, "/admin/apps", "{}", text_of(&page, "main").await);
    // Even a page that somehow learnt the session's CSRF token is refused: its origin is wrong.
    let stolen: String = eval(&page, "document.querySelector('input[name=csrf]').value").await;

    let delete = format!("{base}/admin/apps/{app_id}/delete");
    let rotate = format!("{base}/admin/service-key/rotate");
    let evil = serve_elsewhere(vec![
        ("/delete".to_owned(), attack_page(&delete, None)),
        ("/delete-with-token".to_owned(), attack_page(&delete, Some(&stolen))),
        ("/rotate".to_owned(), attack_page(&rotate, Some(&stolen))),
        ("/revoke".to_owned(), attack_page(&format!("{base}/admin/keys/{key_id}/revoke"), Some(&stolen))),
        (
            "/frame".to_owned(),
            format!("<!doctype html><title>Frame</title><iframe src=\"{base}/admin/apps\"></iframe>"),
        ),
    ])
    .await;
    // Another site altogether (localhost is not 127.0.0.1): the strict cookie is not even sent.
    let other_site = evil.replace("127.0.0.1", "localhost");

    let attacks = [
        format!("{evil}/delete"),
        format!("{evil}/delete-with-token"),
        format!("{evil}/rotate"),
        format!("{other_site}/rotate"),
        format!("{evil}/revoke"),
        format!("data:text/html,{}", attack_page(&rotate, Some(&stolen)).replace('#', "%23")),
    ];
    for attack in attacks {
        open(&page, &attack).await;
        // The form posts itself and the browser lands on the panel's answer.
        wait_until(&page, &format!("location.href.startsWith({base:?}) && document.readyState === 'complete'")).await;
        let title: String = eval(&page, "document.title").await;
        assert!(title.starts_with("Refused"), "{attack}: answered with {title:?}");
        let _ = console.take(); // the 403 shows as a failed load
    }

    // Nothing happened: the application and its key are there, the service key is the same.
    let response = server.admin(Method::GET, &format!("/v1/apps/{app_id}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the application still exists");
    assert_eq!(
        verify_with(&server, &server.service_key, &key, &client_secret).await,
        (StatusCode::OK, "VALID".into()),
        "the service key and the key still work"
    );

    // Nor can another site show the panel in a frame (to trick clicks out of the admin).
    open(&page, &format!("{evil}/frame")).await;
    wait_until(&page, "document.readyState === 'complete'").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let errors = console.take();
    assert!(errors.iter().any(|e| e.contains("frame-ancestors")), "the frame is refused: {errors:#?}");

    // The same action from the panel itself does happen.
    open(&page, &format!("{base}/admin/apps")).await;
    assert_eq!(location(&page).await, "/admin/apps", "still logged in");
    click(&page, &format!("form[action='/admin/apps/{app_id}/delete'] button")).await;
    confirm(&page, "This cannot be undone").await;
    assert_eq!(text_of(&page, ".flash").await, "Application deleted and its keys revoked.");
    let response = server.admin(Method::GET, &format!("/v1/apps/{app_id}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let _ = console.take();

    chrome.close().await;
    server.stop().await;
}
