//! Black-box tests of the HTTP API: each starts a real server on `127.0.0.1:0` (in
//! process, or as a child process where kills and restarts are tested) over a real
//! SQLite file in a temp dir, and speaks HTTP to it.

mod access;
mod account_names;
mod admin;
mod append;
mod batch;
mod browser;
mod builtins;
mod byte_streams;
mod cli;
mod cluster;
mod common;
mod connections;
mod console;
mod digest;
mod dispatch;
mod durability;
mod hardening;
mod ingest_stream;
mod isolation;
mod json_limits;
mod limits;
mod live_state;
mod metadata;
mod migrate;
mod pipes;
mod postgres;
mod read;
mod reducer_errors;
mod reducers;
mod request;
mod resources;
mod sandbox;
mod splices;
mod spy;
mod sse;
mod time_travel;
mod types;
mod walkthrough;
mod webhooks;
