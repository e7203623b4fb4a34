-- keypal 0001 (PostgreSQL): the keys table, its lookup and listing indexes, and the
-- append-only audit log.

CREATE TABLE keypal_keys (
    id            UUID        NOT NULL PRIMARY KEY,  -- UUID v7: sorts by creation time
    namespace     TEXT,                              -- the application; NULL for none
    lookup_kind   TEXT        NOT NULL CHECK (lookup_kind IN ('id', 'digest', 'hint')),
    lookup_value  TEXT        NOT NULL,
    hash          TEXT        NOT NULL,              -- self-describing stored hash
    start         TEXT        NOT NULL,              -- first characters, for display
    last4         TEXT        NOT NULL,              -- last four characters, for display
    name          TEXT,
    owner_id      TEXT,
    tier          TEXT,
    scopes        TEXT[]      NOT NULL DEFAULT '{}',
    metadata      JSONB,                             -- any JSON value
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,                       -- in the future for a rotated key in its grace window
    enabled       BOOLEAN     NOT NULL DEFAULT TRUE,
    rotated_from  UUID,
    rotated_to    UUID,
    remaining     BIGINT      CHECK (remaining >= 0), -- usage credits; NULL is unlimited
    rate_limit    TEXT,                              -- per-key override, like '100/hour'
    encrypted_key TEXT,                              -- recoverable keys only
    version       BIGINT      NOT NULL DEFAULT 1
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
    id         UUID        NOT NULL PRIMARY KEY,     -- UUID v7: the log's order
    at         TIMESTAMPTZ NOT NULL,
    action     TEXT        NOT NULL,
    key_id     UUID,
    namespace  TEXT,
    owner_id   TEXT,
    code       TEXT,
    actor      TEXT        NOT NULL,
    ip         TEXT,
    user_agent TEXT,
    details    JSONB
);

CREATE INDEX keypal_audit_key ON keypal_audit (key_id, id);
CREATE INDEX keypal_audit_owner ON keypal_audit (owner_id, id);
CREATE INDEX keypal_audit_namespace ON keypal_audit (namespace, id);
CREATE INDEX keypal_audit_action ON keypal_audit (action, id);
CREATE INDEX keypal_audit_at ON keypal_audit (at);

CREATE FUNCTION keypal_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'keypal_audit is append-only';
END;
$$;

CREATE TRIGGER keypal_audit_append_only BEFORE UPDATE OR DELETE ON keypal_audit
    FOR EACH ROW EXECUTE FUNCTION keypal_audit_append_only();
