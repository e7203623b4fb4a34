-- keypal 0008 (PostgreSQL): minute counts get their own table, keyed by the minute first.
-- A flush writes one minute for every key active in it; with the minute leading the
-- key, those rows go in side by side at the end of the table instead of next to each
-- key's earlier minutes all over it (many times fewer pages written per flush), and
-- dropping expired minutes deletes from the front. Reads of one key, owner or tag
-- look up each minute of their range by this key. keypal_counts keeps the hour, day,
-- 7-day and 30-day rows. The columns mean what they mean there (migration 5).

CREATE TABLE keypal_minutes (
    bucket             BIGINT NOT NULL,  -- the minute's start, seconds since the Unix epoch
    scope              TEXT    NOT NULL,  -- 'key', 'owner' or 'app'
    namespace          TEXT    NOT NULL,  -- the application, '' for none
    subject            TEXT    NOT NULL,  -- the key id, the owner id, or '' for the application
    tag                TEXT    NOT NULL,  -- '' for all verifications
    valid              BIGINT NOT NULL DEFAULT 0,
    revoked            BIGINT NOT NULL DEFAULT 0,
    disabled           BIGINT NOT NULL DEFAULT 0,
    expired            BIGINT NOT NULL DEFAULT 0,
    insufficient_scope BIGINT NOT NULL DEFAULT 0,
    rate_limited       BIGINT NOT NULL DEFAULT 0,
    usage_exceeded     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, scope, namespace, subject, tag)
);

INSERT INTO keypal_minutes (bucket, scope, namespace, subject, tag, valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded)
SELECT bucket, scope, namespace, subject, tag, valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded
FROM keypal_counts WHERE span = 60;

DELETE FROM keypal_counts WHERE span = 60;
