-- keypal 0002 (PostgreSQL): verification counts per key per minute, one column per
-- result code that names a key. One row per key per minute, never one per request.

CREATE TABLE keypal_usage (
    key_id             UUID        NOT NULL,
    bucket             TIMESTAMPTZ NOT NULL,  -- start of the minute
    namespace          TEXT,
    valid              BIGINT      NOT NULL DEFAULT 0,
    revoked            BIGINT      NOT NULL DEFAULT 0,
    disabled           BIGINT      NOT NULL DEFAULT 0,
    expired            BIGINT      NOT NULL DEFAULT 0,
    insufficient_scope BIGINT      NOT NULL DEFAULT 0,
    rate_limited       BIGINT      NOT NULL DEFAULT 0,
    usage_exceeded     BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, bucket)
);

-- Per-application totals over a time range.
CREATE INDEX keypal_usage_namespace ON keypal_usage (namespace, bucket);
