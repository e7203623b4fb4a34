-- keypal 0001 (SQLite): the keys table, its lookup and listing indexes, and the
-- append-only audit log. Timestamps are integers: microseconds since the Unix epoch.

CREATE TABLE keypal_keys (
    id            BLOB    NOT NULL PRIMARY KEY,  -- UUID v7: sorts by creation time
    namespace     TEXT,                          -- the application; NULL for none
    lookup_kind   TEXT    NOT NULL CHECK (lookup_kind IN ('id', 'digest', 'hint')),
    lookup_value  TEXT    NOT NULL,
    hash          TEXT    NOT NULL,              -- self-describing stored hash
    start         TEXT    NOT NULL,              -- first characters, for display
    last4         TEXT    NOT NULL,              -- last four characters, for display
    name          TEXT,
    owner_id      TEXT,
    tier          TEXT,
    scopes        TEXT    NOT NULL DEFAULT '[]', -- JSON array of strings
    metadata      TEXT,                          -- any JSON value
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    revoked_at    INTEGER,                       -- in the future for a rotated key in its grace window
    enabled       INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    rotated_from  BLOB,
    rotated_to    BLOB,
    remaining     INTEGER CHECK (remaining >= 0), -- usage credits; NULL is unlimited
    rate_limit    TEXT,                          -- per-key override, like '100/hour'
    encrypted_key TEXT,                          -- recoverable keys only
    version       INTEGER NOT NULL DEFAULT 1
);

-- Verify path: one unique probe for id and digest lookups...
CREATE UNIQUE INDEX keypal_keys_lookup ON keypal_keys (lookup_value, lookup_kind) WHERE lookup_kind <> 'hint';
-- ...and a non-unique one for hints (slow hashes without an id segment).
CREATE INDEX keypal_keys_hint ON keypal_keys (lookup_value) WHERE lookup_kind = 'hint';
-- Listings newest first: by application, by application and owner, by owner.
CREATE INDEX keypal_keys_namespace ON keypal_keys (namespace, id);
CREATE INDEX keypal_keys_namespace_owner ON keypal_keys (namespace, owner_id, id);
CREATE INDEX keypal_keys_owner ON keypal_keys (owner_id, id);

CREATE TABLE keypal_audit (
    id         BLOB    NOT NULL PRIMARY KEY,     -- UUID v7: the log's order
    at         INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    key_id     BLOB,
    namespace  TEXT,
    owner_id   TEXT,
    code       TEXT,
    actor      TEXT    NOT NULL,
    ip         TEXT,
    user_agent TEXT,
    details    TEXT                              -- JSON
);

CREATE INDEX keypal_audit_key ON keypal_audit (key_id, id);
CREATE INDEX keypal_audit_owner ON keypal_audit (owner_id, id);
CREATE INDEX keypal_audit_namespace ON keypal_audit (namespace, id);
CREATE INDEX keypal_audit_action ON keypal_audit (action, id);
CREATE INDEX keypal_audit_at ON keypal_audit (at);

CREATE TRIGGER keypal_audit_no_update BEFORE UPDATE ON keypal_audit
BEGIN
    SELECT RAISE(ABORT, 'keypal_audit is append-only');
END;

CREATE TRIGGER keypal_audit_no_delete BEFORE DELETE ON keypal_audit
BEGIN
    SELECT RAISE(ABORT, 'keypal_audit is append-only');
END;
