-- Snapshots of reducer states (API §14, `?at=`): a reducer's state for one substream
-- as it was right after the event at `idx` was folded, saved every `snapshotEvery`
-- events of the substream, so that the state at any index is folded from the nearest
-- one in bounded time.
CREATE TABLE reducer_snapshots (
    reducer_id BIGINT NOT NULL REFERENCES reducers (id),
    -- the substream (`substreams.id`)
    sid        BIGINT NOT NULL,
    -- the last index folded into the state
    idx        BIGINT NOT NULL,
    -- the state as JSON text; NULL for a reducer that returned undefined
    state      TEXT,
    PRIMARY KEY (reducer_id, sid, idx)
);
