//! The client subcommands of `eddy` (API §15): each speaks the HTTP contract to a
//! server (`--server`/`EDDY_SERVER`, `--key`/`EDDY_KEY`), or, for `test`, runs a
//! reducer here. Each prints what went wrong as one sentence on stderr and exits
//! non-zero.

pub mod backup;
pub mod client;
pub mod deploy;
pub mod export;
pub mod send;
pub mod tail;
pub mod test;
