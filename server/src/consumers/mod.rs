//! Consumers (API §5): Server-Sent Events subscriptions and webhooks.

pub mod live_state;
pub mod spy;
pub mod sse;
pub mod webhooks;
