-- Webhook consumers (API §5): each follows one stream (or one substream) through a
-- selector and posts its events, in order, to a URL.
--
-- A webhook is keyed by stream names rather than ids, so it may be created before its
-- stream's first event. `cursor` is the global position up to which every event was
-- delivered or passed over; deliveries resume after it, also after a restart.

CREATE TABLE webhooks (
    id          TEXT    PRIMARY KEY,
    account     TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    -- canonical args of the one substream followed; '' for the whole stream or factory
    args        TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    -- the selector as a canonical query string (`type=a&from=3`)
    selector    TEXT    NOT NULL,
    -- whole envelopes (1) or `{stream, index, type}` only (0)
    data        INTEGER NOT NULL,
    -- the signing secret, `whsec_` + base64
    secret      TEXT    NOT NULL,
    cursor      INTEGER NOT NULL,
    -- why deliveries stopped, once the retry budget ran out; NULL while active
    paused      TEXT,
    created_at  INTEGER NOT NULL
);

CREATE INDEX webhooks_by_stream ON webhooks (account, stream);
