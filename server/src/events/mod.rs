//! Events: appending (`append`) and reading (`read`) of API §2-§3.

pub mod append;
mod batch;
mod chunks;
mod ndjson;
pub mod read;
pub mod uploads;
