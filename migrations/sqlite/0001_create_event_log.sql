-- The durable event log: streams, their substreams and the events themselves.
--
-- Every event belongs to exactly one substream row. A plain stream has one substream
-- whose args are '' ; a factory has one per distinct canonical argument list.
-- `events.pos` is the global append position (gapless, assigned by the single writer);
-- `events.idx` is the per-substream index (gapless from 0).
-- The SQL is kept portable (no SQLite-only types or functions) for a later PostgreSQL
-- backend.

CREATE TABLE streams (
    id          INTEGER PRIMARY KEY,
    account     TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    factory     INTEGER NOT NULL DEFAULT 0,
    -- the stream's settings document (JSON object), as stored by PUT/PATCH /settings
    settings    TEXT    NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    UNIQUE (account, name)
);

CREATE TABLE substreams (
    id             INTEGER PRIMARY KEY,
    stream_id      INTEGER NOT NULL REFERENCES streams (id),
    -- canonical argument list without parentheses, '' for a plain stream
    args           TEXT    NOT NULL,
    event_count    INTEGER NOT NULL DEFAULT 0,
    last_index     INTEGER NOT NULL DEFAULT -1,
    last_timestamp INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    UNIQUE (stream_id, args)
);

CREATE TABLE events (
    pos           INTEGER PRIMARY KEY,
    -- the factory's stream id for events of a substream; NULL for a plain stream,
    -- whose events are read through `sid` alone (keeps its index out of their way)
    factory_id    INTEGER,
    sid           INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    -- the event id, a UUID as 16 bytes
    eid           BLOB    NOT NULL,
    type          TEXT    NOT NULL,
    ts            INTEGER NOT NULL,
    content_type  TEXT    NOT NULL,
    -- the original body bytes, returned unchanged by ?raw
    data          BLOB    NOT NULL,
    -- EventStoreDB-style metadata (JSON text), when a batch gave one
    metadata      TEXT
);

-- reads of one (sub)stream by index, and the gapless-index guarantee
CREATE UNIQUE INDEX events_by_substream_index ON events (sid, idx);
-- idempotent appends: one event id per (sub)stream
CREATE UNIQUE INDEX events_by_substream_id ON events (sid, eid);
-- reads of a whole factory in global append order
CREATE INDEX events_by_factory_pos ON events (factory_id, pos) WHERE factory_id IS NOT NULL;
