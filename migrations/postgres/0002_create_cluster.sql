-- What several eddy nodes on one database share beyond the data itself (API §11,
-- docs/guide/cluster.md).

-- Every writer locks the one row of `event_positions` (SELECT ... FOR UPDATE) for the
-- length of its group transaction, so that groups from all nodes commit one after
-- another with gapless positions and indexes in commit order. Two counters beside the
-- last position:
--   commits  how many groups committed: a writer whose last commit left it at n and
--            finds another number knows other nodes wrote, and reloads its caches
--   changes  how many commits changed keys, accounts, types, settings, reducers, pipes
--            or webhooks: nodes reload what they keep of those when it moves
ALTER TABLE event_positions
    ADD COLUMN commits BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN changes BIGINT NOT NULL DEFAULT 0;
-- the single-node writer before this migration counted positions itself
UPDATE event_positions SET last = GREATEST(last, (SELECT COALESCE(MAX(pos), 0) FROM events));

-- The live nodes: each writes its row at start and its heartbeat every third of the
-- lease time; a node whose heartbeat is older than the lease time is gone.
CREATE TABLE eddy_nodes (
    id            TEXT        PRIMARY KEY,
    address       TEXT        NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- leases this node took from a node that had stopped renewing them
    takeovers     BIGINT      NOT NULL DEFAULT 0
);

-- Who runs each piece of background work: `reducers:<stream id>`, `pipe:<pipe id>`,
-- `webhook:<webhook id>`. A lease is held until `expires_at` and renewed before; a
-- node takes an expired one by raising `epoch`, and every write an owner makes checks,
-- in the same transaction, that its node and epoch still hold the lease (fencing).
CREATE TABLE eddy_leases (
    work        TEXT        PRIMARY KEY,
    node        TEXT        NOT NULL,
    epoch       BIGINT      NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX eddy_leases_by_node ON eddy_leases (node);
