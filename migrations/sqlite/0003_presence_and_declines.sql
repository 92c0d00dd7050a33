-- When a joined participant with no connection leaves the call unless they come
-- back (CONNECTION_TIMEOUT after their last socket dropped, or after a restart).
ALTER TABLE call_participants ADD COLUMN away_until TEXT;

-- When they last declined an invitation to the call (DECLINE_COOLDOWN).
ALTER TABLE call_participants ADD COLUMN declined_at TEXT;
