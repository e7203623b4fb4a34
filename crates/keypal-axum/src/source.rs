//! Where a request carries its key.

use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderName, Uri};
use keypal::PlainKey;

/// The longest key looked at: a longer one is `MALFORMED` and never verified.
pub(crate) const MAX_KEY_LENGTH: usize = 512;

/// One place a request may carry its API key. [`crate::ApiKeyLayer`] looks at its
/// sources in order and takes the first one present.
///
/// ```
/// use keypal_axum::KeySource;
/// let sources = [KeySource::bearer(), KeySource::header("x-api-key"), KeySource::query("api_key")];
/// assert_eq!(sources[1], KeySource::Header(axum::http::HeaderName::from_static("x-api-key")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// `Authorization: Bearer <key>` (the scheme in any case). Another scheme (`Basic`)
    /// is not a key: the next source is looked at.
    Bearer,
    /// A header holding the key alone, like `X-API-Key`.
    Header(HeaderName),
    /// A query parameter (opt-in only: URLs end up in logs, histories and `Referer`
    /// headers). The layer removes it from the URI the service sees.
    Query(String),
}

impl KeySource {
    /// `Authorization: Bearer <key>`.
    pub fn bearer() -> Self {
        KeySource::Bearer
    }

    /// A header holding the key alone.
    ///
    /// # Panics
    /// If `name` is not a valid header name (a programming error, found on the first run).
    #[allow(clippy::expect_used)] // a constant of the service, not anything a client sends
    pub fn header(name: &str) -> Self {
        KeySource::Header(HeaderName::try_from(name).expect("a valid header name"))
    }

    /// A query parameter.
    pub fn query(name: impl Into<String>) -> Self {
        KeySource::Query(name.into())
    }

    /// The key this source finds in the request, if it is there. A header's value is
    /// marked sensitive, so that no logging layer inside prints it.
    fn take(&self, parts: &mut Parts) -> Option<PlainKey> {
        match self {
            KeySource::Bearer => {
                let value = parts.headers.get_mut(AUTHORIZATION)?;
                value.set_sensitive(true);
                let text = value.to_str().ok()?;
                let (scheme, token) = text.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim())
                    .filter(|t| !t.is_empty())
                    .map(PlainKey::from)
            }
            KeySource::Header(name) => {
                let value = parts.headers.get_mut(name)?;
                value.set_sensitive(true);
                let text = value.to_str().ok()?.trim();
                (!text.is_empty()).then(|| PlainKey::from(text))
            }
            KeySource::Query(name) => {
                let (key, rest) = take_query(parts.uri.query()?, name)?;
                if let Some(uri) = with_query(&parts.uri, rest.as_deref()) {
                    parts.uri = uri;
                }
                (!key.is_empty()).then(|| PlainKey::from(key))
            }
        }
    }
}

/// What the sources found in a request.
pub(crate) enum Found {
    /// A key (possibly too long to look at).
    Key(PlainKey),
    /// No source had one.
    Nothing,
}

/// The first key the `sources` find in order; every header source is marked sensitive.
pub(crate) fn find_key(sources: &[KeySource], parts: &mut Parts) -> Found {
    let mut found = None;
    for source in sources {
        // Every header source is looked at (and so marked sensitive), even after a match.
        let key = source.take(parts);
        if found.is_none() {
            found = key;
        }
    }
    match found {
        Some(key) => Found::Key(key),
        None => Found::Nothing,
    }
}

/// The value of the parameter `name` in `query` (percent-decoded), and the query without it.
fn take_query(query: &str, name: &str) -> Option<(String, Option<String>)> {
    let mut value = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if value.is_none() && decode(k).as_deref() == Some(name) {
            value = decode(v);
            if value.is_none() {
                value = Some(String::new());
            }
        } else if !pair.is_empty() {
            rest.push(pair);
        }
    }
    let value = value?;
    Some((value, (!rest.is_empty()).then(|| rest.join("&"))))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `uri` with its query replaced.
fn with_query(uri: &Uri, query: Option<&str>) -> Option<Uri> {
    let path = uri.path();
    let path_and_query = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_parameter_is_decoded_and_removed() {
        assert_eq!(
            take_query("a=1&api_key=sk%5Fx+y&b=2", "api_key"),
            Some(("sk_x y".to_owned(), Some("a=1&b=2".to_owned())))
        );
        assert_eq!(take_query("api_key=k", "api_key"), Some(("k".to_owned(), None)));
        assert_eq!(take_query("a=1", "api_key"), None);
    }
}
