-- keypal 0006 (PostgreSQL): webhooks. The outbox holds the events to deliver, written in
-- the transaction of the change that causes them (only while a webhook exists); the
-- server's dispatcher turns each into one delivery per matching webhook and deletes it
-- (instances claim outbox rows and deliveries with FOR UPDATE SKIP LOCKED). Deliveries
-- are claimed with a lease (`locked_until`) and retried with backoff. A scanned event
-- (a key expiring, running low on credits, ...) fires once per key and threshold: its
-- row in keypal_webhook_fired is inserted with its outbox row.
-- (Independent of migration 0005: either may be applied first.)

CREATE TABLE keypal_outbox (
    id         UUID        NOT NULL PRIMARY KEY,  -- the event's id (an audit event's, or its own): UUID v7
    type       TEXT        NOT NULL,              -- key.revoked, app.client_secret_rotated, ...
    at         TIMESTAMPTZ NOT NULL,
    key_id     UUID,
    namespace  TEXT,
    data       TEXT        NOT NULL               -- JSON: the key's public fields as they were
);

CREATE TABLE keypal_webhook_deliveries (
    id              UUID        NOT NULL PRIMARY KEY,  -- UUID v7
    webhook_id      TEXT        NOT NULL,
    event_id        UUID        NOT NULL,              -- the webhook-id header: the same on every attempt
    event_type      TEXT        NOT NULL,
    body            TEXT        NOT NULL,              -- the JSON payload, as signed and sent
    status          TEXT        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ,                       -- while pending
    locked_until    TIMESTAMPTZ,                       -- the lease of the instance sending it
    created_at      TIMESTAMPTZ NOT NULL,
    first_failed_at TIMESTAMPTZ,
    last_attempt_at TIMESTAMPTZ,
    last_status     BIGINT,                            -- the last HTTP status answered
    last_response   TEXT,                              -- at most 256 bytes of the answer, or the error
    UNIQUE (webhook_id, event_id)
);

-- The sender's claim: due pending deliveries, earliest first.
CREATE INDEX keypal_webhook_deliveries_due ON keypal_webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- A webhook's deliveries, newest first.
CREATE INDEX keypal_webhook_deliveries_webhook ON keypal_webhook_deliveries (webhook_id, id);

CREATE TABLE keypal_webhook_fired (
    key_id    UUID        NOT NULL,
    kind      TEXT        NOT NULL,                    -- key.expiring, key.credits_low, ...
    threshold TEXT        NOT NULL,                    -- '7d', '1d', a credit level, a window
    at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key_id, kind, threshold)
);

-- The expiry scan: a range of expires_at, in (expires_at, id) order, never the whole table.
CREATE INDEX keypal_keys_expires ON keypal_keys (expires_at, id) WHERE expires_at IS NOT NULL;
