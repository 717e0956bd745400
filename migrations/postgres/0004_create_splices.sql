-- Splices (API §12): a stream's history replaced by an edited copy, previewed, then
-- approved or rejected by its owner. The replaced history stays as a read-only stream
-- named `strm@{version}`.
CREATE TABLE splices (
    id            TEXT    PRIMARY KEY,
    stream_id     BIGINT  NOT NULL REFERENCES streams (id),
    -- pending, approved or rejected
    status        TEXT    NOT NULL,
    -- the map function as sent, its language, and as it runs
    source        TEXT    NOT NULL,
    content_type  TEXT    NOT NULL,
    code          TEXT    NOT NULL,
    module        BOOLEAN NOT NULL,
    -- the selector of the events the function sees (others are kept as they are)
    selector      TEXT    NOT NULL,
    -- the position of the stream's last event when the preview was made: an approval
    -- after later appends is refused
    last_position BIGINT  NOT NULL,
    -- the preview (JSON), and the positions of the downstream events to recall
    preview       TEXT    NOT NULL,
    recalls       TEXT    NOT NULL,
    -- the version the replaced history keeps (`strm@{version}`), once approved
    version       BIGINT,
    created_at    BIGINT  NOT NULL,
    decided_at    BIGINT
);

CREATE INDEX splices_by_stream ON splices (stream_id, created_at);
