//! Webhook consumers: signed deliveries in index order with retries, a persisted cursor,
//! pause and resume.

pub mod client;
pub mod signing;
pub mod ssrf;
