-- Reducers and their durable states.
--
-- A reducer is one deployed version of code named `name` on a stream. Redeploying adds
-- a row in state 'building' that folds from the start while the 'active' row keeps
-- answering; once the new row catches up it becomes 'active' and the old row and its
-- states are deleted, in one transaction.
--
-- `position` is the global event position the reducer has folded up to. It is written
-- in the same transaction as the states it produced (exactly once: after a crash the
-- reducer resumes from the last saved position with the states saved with it).

CREATE TABLE reducers (
    id           INTEGER PRIMARY KEY,
    stream_id    INTEGER NOT NULL REFERENCES streams (id),
    name         TEXT    NOT NULL,
    -- 'active' or 'building'
    status       TEXT    NOT NULL,
    -- the code as sent, its media type, and the JavaScript that runs
    source       TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    code         TEXT    NOT NULL,
    -- 'module' (default export) or 'expression' (one function expression)
    shape        TEXT    NOT NULL,
    -- JSON array of the reducer names read through `current`
    reads        TEXT    NOT NULL,
    -- the selector, as a query string (API §4)
    selector     TEXT    NOT NULL,
    -- 'skip' or 'halt'
    on_error     TEXT    NOT NULL,
    code_hash    TEXT    NOT NULL,
    position     INTEGER NOT NULL DEFAULT 0,
    errors       INTEGER NOT NULL DEFAULT 0,
    -- why the reducer stopped (on-error=halt), NULL while it runs
    halted       TEXT,
    created_at   INTEGER NOT NULL
);

CREATE INDEX reducers_by_stream ON reducers (stream_id, name);

-- One state per reducer and substream; `idx` is the last index folded into it.
CREATE TABLE reducer_states (
    reducer_id INTEGER NOT NULL REFERENCES reducers (id),
    sid        INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    state      TEXT,
    PRIMARY KEY (reducer_id, sid)
);
