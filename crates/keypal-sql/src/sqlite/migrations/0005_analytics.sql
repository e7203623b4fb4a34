-- keypal 0005 (SQLite): usage analytics. Verification counts per result code, kept
-- per minute, hour and day ("span", the bucket's width in seconds; keys and owners also per
-- 7 and 30 days, epoch-aligned, to rank them over long ranges), for each key, each
-- owner of an application and each application ("scope" 'key', 'owner', 'app'; the
-- "subject" is the key's id, the owner's id, or '' for the application), for all
-- verifications (tag '') and per tag. A flush adds to the minute, hour and day rows at
-- once, so dropping expired minute and hour rows loses no count (the coarser rows hold
-- them). "namespace" is the application ('' for none), "bucket" the bucket's start in
-- seconds since the Unix epoch. The per-key minute counts of migration 2 move here, then
-- its table goes.

CREATE TABLE keypal_counts (
    span               INTEGER NOT NULL,  -- 60, 3600 or 86400; 604800 and 2592000 for keys and owners
    scope              TEXT    NOT NULL,  -- 'key', 'owner' or 'app'
    namespace          TEXT    NOT NULL,  -- the application, '' for none
    subject            TEXT    NOT NULL,  -- the key id, the owner id, or '' for the application
    tag                TEXT    NOT NULL,  -- '' for all verifications
    bucket             INTEGER NOT NULL,  -- the start of the bucket, seconds since the Unix epoch
    valid              INTEGER NOT NULL DEFAULT 0,
    revoked            INTEGER NOT NULL DEFAULT 0,
    disabled           INTEGER NOT NULL DEFAULT 0,
    expired            INTEGER NOT NULL DEFAULT 0,
    insufficient_scope INTEGER NOT NULL DEFAULT 0,
    rate_limited       INTEGER NOT NULL DEFAULT 0,
    usage_exceeded     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (span, scope, namespace, subject, tag, bucket)
) WITHOUT ROWID;

-- Ranking an application's keys or owners over a range: a scan of its day, 7-day or
-- 30-day rows (whichever the range touches at most 4 of), the counters in the index.
CREATE INDEX keypal_counts_ranks ON keypal_counts (span, scope, namespace, tag, bucket, subject, valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded) WHERE span >= 86400;
-- Dropping expired minute and hour rows.
CREATE INDEX keypal_counts_age ON keypal_counts (span, bucket);

INSERT INTO keypal_counts (span, scope, namespace, subject, tag, bucket, valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded)
SELECT s.span, 'key', m.namespace, m.key, '', (m.bucket / s.span) * s.span, SUM(m.valid), SUM(m.revoked), SUM(m.disabled), SUM(m.expired), SUM(m.insufficient_scope), SUM(m.rate_limited), SUM(m.usage_exceeded)
FROM (SELECT COALESCE(u.namespace, '') AS namespace, lower(substr(hex(u.key_id), 1, 8) || '-' || substr(hex(u.key_id), 9, 4) || '-' || substr(hex(u.key_id), 13, 4) || '-' || substr(hex(u.key_id), 17, 4) || '-' || substr(hex(u.key_id), 21)) AS key, k.owner_id AS owner, u.bucket AS bucket, u.valid, u.revoked, u.disabled, u.expired, u.insufficient_scope, u.rate_limited, u.usage_exceeded FROM keypal_usage u LEFT JOIN keypal_keys k ON k.id = u.key_id) m
CROSS JOIN (SELECT 60 AS span UNION ALL SELECT 3600 UNION ALL SELECT 86400 UNION ALL SELECT 604800 UNION ALL SELECT 2592000) s
GROUP BY s.span, m.namespace, m.key, (m.bucket / s.span) * s.span;

INSERT INTO keypal_counts (span, scope, namespace, subject, tag, bucket, valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded)
SELECT s.span, 'owner', m.namespace, m.owner, '', (m.bucket / s.span) * s.span, SUM(m.valid), SUM(m.revoked), SUM(m.disabled), SUM(m.expired), SUM(m.insufficient_scope), SUM(m.rate_limited), SUM(m.usage_exceeded)
FROM (SELECT COALESCE(u.namespace, '') AS namespace, lower(substr(hex(u.key_id), 1, 8) || '-' || substr(hex(u.key_id), 9, 4) || '-' || substr(hex(u.key_id), 13, 4) || '-' || substr(hex(u.key_id), 17, 4) || '-' || substr(hex(u.key_id), 21)) AS key, k.owner_id AS owner, u.bucket AS bucket, u.valid, u.revoked, u.disabled, u.expired, u.insufficient_scope, u.rate_limited, u.usage_exceeded FROM keypal_usage u LEFT JOIN keypal_keys k ON k.id = u.key_id) m
CROSS JOIN (SELECT 60 AS span UNION ALL SELECT 3600 UNION ALL SELECT 86400 UNION ALL SELECT 604800 UNION ALL SELECT 2592000) s
WHERE m.owner IS NOT NULL
GROUP BY s.span, m.namespace, m.owner, (m.bucket / s.span) * s.span;

INSERT INTO keypal_counts (span, scope, namespace, subject, tag, bucket, valid, revoked, disabled, expired, insufficient_scope, rate_limited, usage_exceeded)
SELECT s.span, 'app', m.namespace, '', '', (m.bucket / s.span) * s.span, SUM(m.valid), SUM(m.revoked), SUM(m.disabled), SUM(m.expired), SUM(m.insufficient_scope), SUM(m.rate_limited), SUM(m.usage_exceeded)
FROM (SELECT COALESCE(u.namespace, '') AS namespace, lower(substr(hex(u.key_id), 1, 8) || '-' || substr(hex(u.key_id), 9, 4) || '-' || substr(hex(u.key_id), 13, 4) || '-' || substr(hex(u.key_id), 17, 4) || '-' || substr(hex(u.key_id), 21)) AS key, k.owner_id AS owner, u.bucket AS bucket, u.valid, u.revoked, u.disabled, u.expired, u.insufficient_scope, u.rate_limited, u.usage_exceeded FROM keypal_usage u LEFT JOIN keypal_keys k ON k.id = u.key_id) m
CROSS JOIN (SELECT 60 AS span UNION ALL SELECT 3600 UNION ALL SELECT 86400) s
GROUP BY s.span, m.namespace, (m.bucket / s.span) * s.span;

DROP TABLE keypal_usage;
