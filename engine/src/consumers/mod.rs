//! Consumers (API §5): Server-Sent Events subscribers and webhooks, both following
//! streams through selectors.

pub mod webhooks;
