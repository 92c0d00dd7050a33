-- How a call's media flows: `sfu` (the built-in SFU, the default) or `p2p`
-- (clients connect directly; signaling relays their offers and candidates).
ALTER TABLE calls ADD COLUMN media_mode TEXT NOT NULL DEFAULT 'sfu';

-- Who measured a quality sample: the participant's client, or the SFU.
ALTER TABLE call_quality_metrics ADD COLUMN source TEXT NOT NULL DEFAULT 'client';
