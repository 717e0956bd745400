//! Consumers (API §5): Server-Sent Events subscriptions and webhooks.

pub mod spy;
pub mod sse;
pub mod webhooks;
