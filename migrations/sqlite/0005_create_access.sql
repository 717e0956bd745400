-- Accounts and their API keys (API §9), and event types (API §6).
--
-- Accounts matter only when the server runs with an admin token: then an account
-- exists once the admin creates it, and requests prove who they are with its keys.
-- A key is shown once, when it is created; only its SHA-256 is stored (keys are 256
-- random bits, so a plain hash cannot be searched backwards).
--
-- Event types are keyed by stream names, like pipes and webhooks, so a type can be
-- defined before the stream's first event (and before it is known to be a factory).

CREATE TABLE accounts (
    name        TEXT    PRIMARY KEY,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT    PRIMARY KEY,
    account     TEXT    NOT NULL REFERENCES accounts (name),
    -- lowercase hex SHA-256 of the whole key
    hash        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE event_types (
    account     TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    -- the JTD schema document as given (or as imported)
    schema      TEXT    NOT NULL,
    -- where the schema was imported from (`/acct/strm:type`), when it was
    imported    TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (account, stream, name)
);
