-- Only ids that clients chose are indexed for idempotency.
--
-- `cid` holds the `Event-Id` a client sent (NULL when the server generated the id);
-- `eid` still holds every event's id, as before. A server-generated id encodes the
-- event's position under a key kept in `instance` (see engine/src/store/event_ids.rs),
-- so a retry that sends such an id back is recognised through the primary key, and
-- the unique index no longer takes an insert for every event.
--
-- Existing events keep their ids in the index: their ids were made before the key,
-- so all of them count as chosen by clients.

ALTER TABLE events ADD COLUMN cid BLOB;
UPDATE events SET cid = eid;
DROP INDEX events_by_substream_id;
CREATE UNIQUE INDEX events_by_substream_client_id ON events (sid, cid) WHERE cid IS NOT NULL;

-- Values that belong to this database rather than to any stream.
CREATE TABLE instance (
    name   TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);
