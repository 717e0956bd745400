//! Consumers (API §5): Server-Sent Events subscribers and webhooks, both following
//! streams through selectors.

pub(crate) mod hub;
pub mod subscription;
pub mod webhooks;

pub use hub::DEFAULT_MERGE_RATE;
pub use subscription::{Delivery, Follow, Start, Subscription};
