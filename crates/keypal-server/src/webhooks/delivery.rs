//! The sender: claims due deliveries under a lease, POSTs them signed, records each
//! attempt, retries with backoff for about a day, and disables an endpoint that has
//! failed for 3 days.
//!
//! The HTTP client ([`Client`]) follows no redirect, gives up after 10 seconds, reads at
//! most 256 bytes of an answer, and (unless private addresses are allowed) connects only
//! to public addresses: it makes each connection itself, to an address it checked at
//! that moment (a URL's literal address, or what [`resolve`] leaves of the host name's
//! addresses), so a name that resolves to a private address at send time (DNS
//! rebinding) is never connected to.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use keypal_sql::{Attempt, Delivery};
use time::OffsetDateTime;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{Webhook, address_refused, signing};
use crate::state::State;

/// How long an instance holds a claimed delivery: longer than an attempt can take.
pub const LEASE: Duration = Duration::from_secs(60);
/// How long an attempt may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer kept.
pub const EXCERPT_BYTES: usize = 256;
/// Deliveries sent at once by one instance.
const CONCURRENCY: u32 = 16;
/// How often due deliveries are looked for when nothing wakes the sender.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// The wait after each failed attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about
/// 28 hours in all); after the eighth attempt the delivery has failed.
pub const BACKOFF: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
/// An endpoint whose deliveries have all failed for this long is disabled.
pub const DISABLE_AFTER: time::Duration = time::Duration::days(3);

/// When to try again after the `attempts`-th attempt failed (`None`: no more).
///
/// ```
/// # use keypal_server::webhook_retry_after as retry_after;
/// use std::time::Duration;
/// assert_eq!(retry_after(1), Some(Duration::from_secs(5)));
/// assert_eq!(retry_after(7), Some(Duration::from_secs(36_000)));
/// assert_eq!(retry_after(8), None);
/// ```
pub fn retry_after(attempts: u32) -> Option<Duration> {
    let index = usize::try_from(attempts).ok()?.checked_sub(1)?;
    BACKOFF.get(index).copied()
}

/// The HTTP client of deliveries: HTTP/1.1 over a connection it makes itself to an
/// address it has checked (see the module's documentation). Cheap to clone.
#[derive(Clone)]
pub struct Client {
    tls: tokio_rustls::TlsConnector,
    allow_private: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("allow_private", &self.allow_private).finish_non_exhaustive()
    }
}

/// An answer: its status and its first bytes.
struct Answer {
    status: u16,
    head: Vec<u8>,
}

/// The addresses a host name resolves to that webhooks may be sent to (all of them when
/// private addresses are allowed); an error names the host when none is left.
pub async fn resolve(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let found: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
    let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| allow_private || !address_refused(a.ip())).collect();
    if allowed.is_empty() {
        return Err(format!("{host} resolves to no public address (loopback and private ones are refused)"));
    }
    Ok(allowed)
}

impl Client {
    /// A client; `allow_private` lets it connect to loopback and private addresses.
    pub fn new(allow_private: bool) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client { tls: tokio_rustls::TlsConnector::from(Arc::new(config)), allow_private })
    }

    /// The addresses `url` may be sent to: a literal address checked, a name resolved and filtered.
    async fn addresses(&self, url: &url::Url) -> Result<Vec<SocketAddr>, String> {
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err("the URL names no host".to_owned()),
        };
        match literal {
            Some(ip) if !self.allow_private && address_refused(ip) => {
                Err("refused: the URL names a loopback or private address".to_owned())
            }
            Some(ip) => Ok(vec![SocketAddr::new(ip, port)]),
            None => resolve(url.host_str().unwrap_or_default(), port, self.allow_private).await,
        }
    }

    /// POSTs `body` with `headers` to `url`: the answer's status and first
    /// [`EXCERPT_BYTES`] bytes, within [`TIMEOUT`]. A redirect is an answer like any other.
    async fn post(&self, url: &str, headers: &[(&str, String)], body: &str) -> Result<Answer, String> {
        let sent = tokio::time::timeout(TIMEOUT, self.post_now(url, headers, body)).await;
        sent.unwrap_or_else(|_| Err(format!("no answer within {} seconds", TIMEOUT.as_secs())))
    }

    async fn post_now(&self, url: &str, headers: &[(&str, String)], body: &str) -> Result<Answer, String> {
        let url = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        let mut stream = None;
        let mut last_error = String::from("no address to connect to");
        for addr in self.addresses(&url).await? {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(tcp) => {
                    stream = Some(tcp);
                    break;
                }
                Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
            }
        }
        let tcp = stream.ok_or(last_error)?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let mut request = hyper::Request::post(target).header(hyper::header::HOST, authority);
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request.body(body.to_owned()).map_err(|e| format!("cannot make the request: {e}"))?;
        if url.scheme() == "https" {
            let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| format!("not a TLS name: {e}"))?;
            let tls = self.tls.connect(name, tcp).await.map_err(|e| format!("TLS failed: {e}"))?;
            exchange(tls, request).await
        } else {
            exchange(tcp, request).await
        }
    }
}

/// Sends `request` over `stream` (HTTP/1.1) and reads the answer's first bytes.
async fn exchange<S>(stream: S, request: hyper::Request<String>) -> Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP failed: {e}"))?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| format!("HTTP failed: {e}"));
    let result = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut head = Vec::new();
            while head.len() < EXCERPT_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            head.extend_from_slice(&data);
                        }
                    }
                    _ => break,
                }
            }
            Ok(Answer { status, head })
        }
        Err(e) => Err(e),
    };
    // The rest of the answer is not read: the connection is closed.
    driver.abort();
    result
}

/// At most [`EXCERPT_BYTES`] of `bytes` as text (cut on a character boundary).
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_BYTES)]).into_owned();
    let mut end = text.len().min(EXCERPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What one attempt sends: the event's id (`webhook-id`), the body, and how many
/// attempts were made before.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The `webhook-id`.
    pub event_id: Uuid,
    /// The payload.
    pub body: &'a str,
    /// Attempts made before this one.
    pub attempts: u32,
}

impl<'a> From<&'a Delivery> for Message<'a> {
    fn from(delivery: &'a Delivery) -> Self {
        Message { event_id: delivery.event_id, body: &delivery.body, attempts: delivery.attempts }
    }
}

/// One attempt of `message` to `webhook`, with a signature by each of `keys` (space
/// separated, as the specification allows; receivers accept any one they know): the
/// result to record.
pub async fn attempt(client: &Client, webhook: &Webhook, keys: &[impl AsRef<[u8]>], message: Message<'_>) -> Attempt {
    let attempts = message.attempts.saturating_add(1);
    let failed = |status: Option<u16>, excerpt: String| Attempt::Failed {
        status,
        excerpt,
        retry_at: retry_after(attempts).map(|wait| OffsetDateTime::now_utc() + wait),
    };
    let id = message.event_id.to_string();
    let timestamp = OffsetDateTime::now_utc().unix_timestamp();
    let signature = keys
        .iter()
        .map(|key| signing::signature(key.as_ref(), &id, timestamp, message.body.as_bytes()))
        .collect::<Vec<_>>()
        .join(" ");
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("user-agent", concat!("keypal-webhooks/", env!("CARGO_PKG_VERSION")).to_owned()),
        ("webhook-id", id),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature),
    ];
    let answer = match client.post(&webhook.url, &headers, message.body).await {
        Ok(answer) => answer,
        Err(e) => return failed(None, excerpt(e.as_bytes())),
    };
    let text = excerpt(&answer.head);
    let status = answer.status;
    if (200..300).contains(&status) { Attempt::Succeeded { status, excerpt: text } } else { failed(Some(status), text) }
}

/// Sends one claimed delivery and records the result (under its lease).
async fn deliver(state: Arc<State>, client: Client, delivery: Delivery) {
    let Some(lease) = delivery.locked_until else { return };
    let found = match delivery.webhook_id.parse::<Uuid>() {
        Ok(id) => super::find(&state, id).await.ok(),
        Err(_) => None,
    };
    let result = match &found {
        None => Attempt::Failed { status: None, excerpt: "the webhook was deleted".into(), retry_at: None },
        Some(webhook) if !webhook.enabled && delivery.event_type != super::TEST_EVENT => {
            Attempt::Failed { status: None, excerpt: "the webhook is disabled".into(), retry_at: None }
        }
        Some(webhook) => match webhook.signing_keys(&state) {
            Ok(keys) => attempt(&client, webhook, &keys, Message::from(&delivery)).await,
            Err(_) => {
                Attempt::Failed { status: None, excerpt: "the webhook secret cannot be opened".into(), retry_at: None }
            }
        },
    };
    let failed = matches!(result, Attempt::Failed { .. });
    match state.store.finish_delivery(delivery.id, lease, &result).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(delivery = %delivery.id, "a webhook delivery outlived its lease; its result is dropped")
        }
        Err(e) => tracing::warn!(error = %e, delivery = %delivery.id, "recording a webhook delivery failed"),
    }
    if let (true, Some(webhook)) = (failed, found.filter(|w| w.enabled)) {
        match state.store.webhook_failing_since(&delivery.webhook_id).await {
            Ok(Some(since)) if OffsetDateTime::now_utc() - since >= DISABLE_AFTER => {
                if let Err(e) = super::disable_failing(&state, webhook.id, since).await {
                    tracing::warn!(error = %e.message, "disabling a failing webhook failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading a webhook's failures failed"),
        }
    }
}

/// Claims and sends due deliveries until the task is aborted.
pub async fn run(state: Arc<State>, client: Client) {
    loop {
        let claimed = match state.store.claim_deliveries(OffsetDateTime::now_utc(), LEASE, CONCURRENCY).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook deliveries failed; will retry");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(POLL_EVERY) => {}
                () = state.webhooks.wake_sender.notified() => {}
            }
            continue;
        }
        let mut sending = JoinSet::new();
        for delivery in claimed {
            sending.spawn(deliver(state.clone(), client.clone(), delivery));
        }
        while sending.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]
    use super::*;

    /// A name that resolves to loopback (`localhost`, from /etc/hosts) is refused at
    /// resolution unless private addresses are allowed: what keeps DNS rebinding out.
    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused() {
        let error = resolve("localhost", 80, false).await.expect_err("refused");
        assert!(error.contains("no public address"), "{error}");
        let allowed = resolve("localhost", 80, true).await.expect("allowed");
        assert!(!allowed.is_empty() && allowed.iter().all(|a| a.ip().is_loopback()));
    }

    /// A URL naming a private address is refused before any connection, at each attempt.
    #[tokio::test]
    async fn literal_private_addresses_are_refused_at_send_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let webhook = Webhook {
            id: Uuid::now_v7(),
            url,
            events: vec!["key.created".into()],
            app_id: None,
            description: None,
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            secret: String::new(),
            previous_secret: None,
            previous_secret_until: None,
            created_at: OffsetDateTime::now_utc(),
        };
        let message = Message { event_id: Uuid::now_v7(), body: "{}", attempts: 0 };
        let result = attempt(&Client::new(false).unwrap(), &webhook, &[b"key"], message).await;
        match result {
            Attempt::Failed { status: None, excerpt, retry_at: Some(_) } => {
                assert!(excerpt.contains("refused"), "{excerpt}")
            }
            other => panic!("{other:?}"),
        }
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "no connection was made");
    }

    #[test]
    fn excerpts_are_cut_at_256_bytes_on_a_character_boundary() {
        let long = "é".repeat(300);
        let cut = excerpt(long.as_bytes());
        assert!(cut.len() <= EXCERPT_BYTES && cut.len() >= EXCERPT_BYTES - 4, "{}", cut.len());
        assert_eq!(excerpt(b"short"), "short");
    }
}
