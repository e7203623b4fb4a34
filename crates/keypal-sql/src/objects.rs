//! Small JSON documents of the service built on keypal (applications, settings, admin
//! sessions), kept in the same database as the keys (`keypal_objects`).

use serde_json::Value;
use time::OffsetDateTime;

/// A stored document: addressed by `kind` and `id`, optionally found by a `lookup`
/// value that is unique within its kind (a client secret's digest, a session token's digest).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Object {
    /// What it is (`app`, `setting`, `session`, ...).
    pub kind: String,
    /// Its id within the kind.
    pub id: String,
    /// The unique lookup value, if any.
    pub lookup: Option<String>,
    /// The document.
    pub body: Value,
    /// When it was first stored.
    pub created_at: OffsetDateTime,
    /// When it was last changed.
    pub updated_at: OffsetDateTime,
}

/// A document to store with [`SqlStore::insert_objects`](crate::SqlStore::insert_objects).
#[derive(Debug, Clone, Copy)]
pub struct NewObject<'a> {
    /// What it is.
    pub kind: &'a str,
    /// Its id within the kind.
    pub id: &'a str,
    /// The unique lookup value, if any.
    pub lookup: Option<&'a str>,
    /// The document.
    pub body: &'a Value,
}

/// A document to delete with [`SqlStore::delete_objects`](crate::SqlStore::delete_objects):
/// `kind`/`id`, and, when `body` is given, only while the stored document is that one.
#[derive(Debug, Clone, Copy)]
pub struct ObjectRef<'a> {
    /// What it is.
    pub kind: &'a str,
    /// Its id within the kind.
    pub id: &'a str,
    /// The document it must still be, if any.
    pub body: Option<&'a Value>,
}
