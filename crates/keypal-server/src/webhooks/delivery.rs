//! The sender: claims due deliveries under a lease, POSTs them signed, records each
//! attempt, retries with backoff for about a day, and disables an endpoint that has
//! failed for 3 days.
//!
//! The HTTP client follows no redirect, gives up after 10 seconds, reads at most 256
//! bytes of an answer, and (unless private addresses are allowed) connects only to
//! public addresses: a URL naming an address literally is checked before each attempt,
//! and host names are resolved by [`GuardedResolver`], which drops every refused
//! address from the answer, so a name that resolves to a private address at send time
//! (DNS rebinding) is never connected to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keypal_sql::{Attempt, Delivery};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
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

/// Resolves host names with the system's resolver, keeping only addresses webhooks may
/// be sent to (all of them when private addresses are allowed).
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.into_iter().filter(|a| allow_private || !address_refused(a.ip())).collect();
            if allowed.is_empty() {
                let message = format!("{host} resolves to no public address (loopback and private ones are refused)");
                return Err(message.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client of deliveries (see the module's documentation).
pub fn client(allow_private: bool) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .no_proxy()
        .user_agent(concat!("keypal-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .build()
        .map_err(|e| e.to_string())
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

/// One attempt of `message` to `webhook` signed with `key`: the result to record.
pub async fn attempt(
    client: &reqwest::Client,
    allow_private: bool,
    webhook: &Webhook,
    key: &[u8],
    message: Message<'_>,
) -> Attempt {
    let attempts = message.attempts.saturating_add(1);
    let failed = |status: Option<u16>, excerpt: String| Attempt::Failed {
        status,
        excerpt,
        retry_at: retry_after(attempts).map(|wait| OffsetDateTime::now_utc() + wait),
    };
    // A URL naming an address is not resolved: check it here, at every attempt.
    if !allow_private
        && let Ok(url) = reqwest::Url::parse(&webhook.url)
        && let Some(ip) = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        }
        && address_refused(ip)
    {
        return failed(None, "refused: the URL names a loopback or private address".to_owned());
    }
    let id = message.event_id.to_string();
    let timestamp = OffsetDateTime::now_utc().unix_timestamp();
    let signature = signing::signature(key, &id, timestamp, message.body.as_bytes());
    let sent = client
        .post(&webhook.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(message.body.to_owned())
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return failed(None, excerpt(e.without_url().to_string().as_bytes())),
    };
    let status = response.status();
    let mut head = Vec::new();
    while head.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = excerpt(&head);
    if status.is_success() {
        Attempt::Succeeded { status: status.as_u16(), excerpt: text }
    } else {
        failed(Some(status.as_u16()), text)
    }
}

/// Sends one claimed delivery and records the result (under its lease).
async fn deliver(state: Arc<State>, client: reqwest::Client, delivery: Delivery) {
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
        Some(webhook) => match webhook.signing_key(&state) {
            Ok(key) => {
                attempt(&client, state.webhooks.settings.allow_private, webhook, &key, Message::from(&delivery)).await
            }
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
pub async fn run(state: Arc<State>, client: reqwest::Client) {
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
        let name: Name = "localhost".parse().unwrap();
        let refused = GuardedResolver { allow_private: false }.resolve(name).await;
        let error = refused.err().expect("refused").to_string();
        assert!(error.contains("no public address"), "{error}");
        let name: Name = "localhost".parse().unwrap();
        let allowed = GuardedResolver { allow_private: true }.resolve(name).await.expect("allowed");
        assert!(allowed.into_iter().all(|a| a.ip().is_loopback()));
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
            created_at: OffsetDateTime::now_utc(),
        };
        let message = Message { event_id: Uuid::now_v7(), body: "{}", attempts: 0 };
        let result = attempt(&client(false).unwrap(), false, &webhook, b"key", message).await;
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
