-- Pipes (API §8) and the origin of piped and dispatched events.
--
-- A pipe copies (or, with code, maps) the events of one stream that match its selector
-- into another stream. Like webhooks, pipes are keyed by names, so a pipe may exist
-- before its origin's first event. `cursor` is the global position up to which every
-- event of the origin was piped or passed over; it moves in the same transaction as
-- the events the pipe appends, which is what makes piping exactly once.

CREATE TABLE pipes (
    id           INTEGER PRIMARY KEY,
    account      TEXT    NOT NULL,
    stream       TEXT    NOT NULL,
    -- canonical args of the origin substream; '' for the whole stream or factory
    args         TEXT    NOT NULL,
    dest_account TEXT    NOT NULL,
    dest_stream  TEXT    NOT NULL,
    -- canonical args of the destination substream; '' to route by the mapped args
    dest_args    TEXT    NOT NULL,
    -- the selector as a canonical query string
    selector     TEXT    NOT NULL,
    -- the mapping code as sent and its media type; '' for a copy pipe
    source       TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    -- the JavaScript that runs, and 'module' or 'expression'
    code         TEXT    NOT NULL,
    shape        TEXT    NOT NULL,
    cursor       INTEGER NOT NULL,
    -- events appended to the destination, and events that failed to map or append
    piped        INTEGER NOT NULL DEFAULT 0,
    errors       INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    UNIQUE (account, stream, args, dest_account, dest_stream, dest_args)
);

-- `{"stream": "acct/strm('a')", "index": n}` for an event a pipe or a dispatch wrote
ALTER TABLE events ADD COLUMN origin TEXT;
