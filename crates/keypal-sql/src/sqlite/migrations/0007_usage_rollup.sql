-- keypal 0007 (SQLite): usage counts are flushed as minute rows only; a periodic
-- roll-up adds closed minutes into the hour, day (and, for keys and owners, 7-day and
-- 30-day) rows. keypal_rollup holds how far it has gone: every minute before
-- rolled_until is in the coarser rows, the minutes from it on are only in minute rows
-- (reads add them), and a late flush of a minute before it writes every width at once.
-- Until now a flush wrote every width, so the coarser rows already hold every count:
-- the roll-up starts at the next minute.

CREATE TABLE keypal_rollup (
    id            INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    rolled_until  INTEGER NOT NULL  -- seconds since the Unix epoch, on a minute
);

INSERT INTO keypal_rollup (id, rolled_until) VALUES (1, (CAST(strftime('%s', 'now') AS INTEGER) / 60 + 1) * 60);
