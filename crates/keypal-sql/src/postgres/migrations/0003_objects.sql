-- keypal 0003 (PostgreSQL): small JSON documents of the service (applications,
-- settings, admin sessions), addressed by kind and id, with an optional unique lookup
-- per kind (an application's client-secret digest, a session's token digest).

CREATE TABLE keypal_objects (
    kind       TEXT        NOT NULL,
    id         TEXT        NOT NULL,
    lookup     TEXT,
    body       TEXT        NOT NULL,  -- JSON
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, id)
);

CREATE UNIQUE INDEX keypal_objects_lookup ON keypal_objects (kind, lookup) WHERE lookup IS NOT NULL;
