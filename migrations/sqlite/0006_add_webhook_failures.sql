-- The failed attempts of the delivery that paused a webhook, so that a paused
-- webhook's status still shows them, also after a restart. An active webhook's
-- delivery task counts its failures in memory; this stays 0 until a pause.

ALTER TABLE webhooks ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
