-- keypal 0004 (SQLite): credits that refill. A key with a refill has its `remaining`
-- set back to `refill_amount` at each boundary of `refill` (like 'daily', 'monthly:15'
-- or '12h'), applied by the guarded decrement when `refilled_at` is before the boundary.

ALTER TABLE keypal_keys ADD COLUMN refill TEXT;
ALTER TABLE keypal_keys ADD COLUMN refill_amount INTEGER CHECK (refill_amount >= 0);
ALTER TABLE keypal_keys ADD COLUMN refilled_at INTEGER;
