-- keypal 0002 (SQLite): verification counts per key per minute, one column per
-- result code that names a key. One row per key per minute, never one per request.

CREATE TABLE keypal_usage (
    key_id             BLOB    NOT NULL,
    bucket             INTEGER NOT NULL,  -- start of the minute, seconds since the Unix epoch
    namespace          TEXT,
    valid              INTEGER NOT NULL DEFAULT 0,
    revoked            INTEGER NOT NULL DEFAULT 0,
    disabled           INTEGER NOT NULL DEFAULT 0,
    expired            INTEGER NOT NULL DEFAULT 0,
    insufficient_scope INTEGER NOT NULL DEFAULT 0,
    rate_limited       INTEGER NOT NULL DEFAULT 0,
    usage_exceeded     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, bucket)
);

-- Per-application totals over a time range.
CREATE INDEX keypal_usage_namespace ON keypal_usage (namespace, bucket);
