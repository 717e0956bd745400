-- Snapshots of reducer states (API §14, `?at=`): a reducer's state for one substream
-- as it was right after the event at `idx` was folded, saved every `snapshotEvery`
-- events of the substream, so that the state at any index is folded from the nearest
-- one in bounded time.
CREATE TABLE reducer_snapshots (
    reducer_id INTEGER NOT NULL REFERENCES reducers (id),
    sid        INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    state      TEXT,
    PRIMARY KEY (reducer_id, sid, idx)
);
