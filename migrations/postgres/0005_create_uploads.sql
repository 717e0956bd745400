-- The byte uploads (`?chunks=true`, API §13) open on each node, so that a byte read
-- following a stream on any node ends only once no node has an upload open on it.
-- Rows of a node that is gone are ignored (and removed with the node's row).
CREATE TABLE eddy_uploads (
    id      TEXT PRIMARY KEY,
    node    TEXT NOT NULL,
    -- the (sub)stream's URL path: `/acct/strm` or `/acct/strm('a')`
    stream  TEXT NOT NULL
);
CREATE INDEX eddy_uploads_by_stream ON eddy_uploads (stream);
