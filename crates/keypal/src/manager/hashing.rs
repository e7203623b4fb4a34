//! The manager's hash checks and new hashes: fast hashes in place, slow ones
//! (bcrypt, argon2id) through the manager's [`Offload`](crate::offload::Offload), so
//! they never hold up the task (and the async runtime's thread) that asked for them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use zeroize::Zeroizing;

use super::KeyManager;
use crate::Error;
use crate::hash::Hashing;
use crate::offload::OffloadError;
use crate::record::{HashCovers, KeyRecord};
use crate::store::Store;

impl<S: Store> KeyManager<S> {
    /// The first of `candidates` whose stored hash `key` matches. No candidate costs a
    /// dummy check under the current hasher, so that an unknown key takes as long as a
    /// known one. When any of these checks is slow, all of them run as one piece of
    /// offloaded work. A hash of the secret segment alone (an imported key not yet
    /// verified) is checked against the secret the key's format finds in it.
    pub(super) fn matching(&self, key: &str, candidates: &[Arc<KeyRecord>]) -> Matching {
        let hashing = &self.inner.hashing;
        let secret =
            candidates.iter().any(|r| r.hash_covers() == HashCovers::Secret).then(|| self.secret_of(key)).flatten();
        let slow = match candidates {
            [] => hashing.is_slow(),
            _ => candidates.iter().any(|r| hashing.is_slow_hash(&r.hash)),
        };
        if !slow {
            let found = first_matching(hashing, key.as_bytes(), secret.map(str::as_bytes), candidates);
            return Matching::Checked(found.and_then(|i| candidates.get(i).cloned()));
        }
        let inner = self.inner.clone();
        let key = Zeroizing::new(key.as_bytes().to_vec());
        let secret = secret.map(|secret| Zeroizing::new(secret.as_bytes().to_vec()));
        let candidates = candidates.to_vec();
        Matching::Offloaded(Box::pin(async move {
            let offload = inner.offload.clone();
            offload
                .compute(move || {
                    let found = first_matching(&inner.hashing, &key, secret.as_deref().map(Vec::as_slice), &candidates);
                    found.and_then(|i| candidates.into_iter().nth(i))
                })
                .await
        }))
    }

    /// The `{secret}` segment of a key, as the first accepted format it parses under
    /// finds it.
    pub(super) fn secret_of<'k>(&'k self, key: &'k str) -> Option<&'k str> {
        self.parse(key).and_then(|(format, _)| format.formatter.secret(key))
    }

    /// `key` hashed under the current hash policy; through the offload when that hash is slow.
    pub(super) async fn hash_new(&self, key: &[u8]) -> Result<String, Error> {
        if !self.inner.hashing.is_slow() {
            return Ok(self.inner.hashing.hash(key));
        }
        let inner = self.inner.clone();
        let key = Zeroizing::new(key.to_vec());
        Ok(self.inner.offload.compute(move || inner.hashing.hash(&key)).await?)
    }
}

/// The record [`KeyManager::matching`] found: checked at once (fast hashes), or by
/// offloaded work to await. A small future of its own, since it is part of every
/// verification's future, which is moved by copying all its bytes.
pub(super) enum Matching {
    Checked(Option<Arc<KeyRecord>>),
    Offloaded(Pin<Box<dyn Future<Output = Result<Found, OffloadError>> + Send>>),
}

/// The record found, if any.
type Found = Option<Arc<KeyRecord>>;

impl Future for Matching {
    type Output = Result<Option<Arc<KeyRecord>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Matching::Checked(found) => Poll::Ready(Ok(found.take())),
            Matching::Offloaded(work) => work.as_mut().poll(cx).map_err(Error::from),
        }
    }
}

/// The position of the first of `candidates` whose hash `key` (or, for a hash of the
/// secret alone, its `secret`) matches, after a dummy check when there is none.
fn first_matching(
    hashing: &Hashing,
    key: &[u8],
    secret: Option<&[u8]>,
    candidates: &[Arc<KeyRecord>],
) -> Option<usize> {
    if candidates.is_empty() {
        hashing.dummy_verify(key);
        return None;
    }
    candidates.iter().position(|r| hashing.verify_with_secret(key, secret, &r.hash))
}
