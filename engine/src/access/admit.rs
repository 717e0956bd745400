//! The append policy: the one operation every ingest path (a single POST, a batch, an
//! NDJSON stream) calls before it appends. In order: write access (401/403, decided
//! before anything that depends on the stream, so a refusal says nothing about it and
//! the body is not read), the blocklists (403) and the rate limit (429, or 413 for a
//! batch larger than the burst), then each event's data parsed once within the JSON
//! limits and checked against its event type (400, counted as a `type` refusal).

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use super::controls::StreamControls;
use super::{Credentials, Need, Target};
use crate::Engine;
use crate::error::Result;
use crate::event::NewEvent;
use crate::path::StreamPath;

/// How an append's events arrive; `F` reads them (the request body), and runs only
/// once write access is granted.
pub enum Intake<F> {
    /// One event: one append is taken from the rate limit before it is read.
    One(F),
    /// An atomic batch: its events are taken from the rate limit once read, and a
    /// refusal names the event's position.
    Batch(F),
    /// Events checked one at a time as they arrive ([`AppendPolicy::check`]): one
    /// append is taken from the rate limit now; the caller paces the rest.
    Stream,
}

/// An append that passed the policy: its events, all checked, and the policy for any
/// that arrive later (a stream's).
pub struct Admitted<'e> {
    pub events: Vec<NewEvent>,
    pub policy: AppendPolicy<'e>,
}

/// The policy of one (sub)stream for an authorized request.
pub struct AppendPolicy<'e> {
    engine: &'e Engine,
    controls: Arc<StreamControls>,
}

impl Engine {
    /// Admits an append to `path` by `creds` (from `referer`, which the blocklists
    /// match): the whole policy, in the order the module doc gives.
    pub async fn admit_append<F>(
        &self,
        creds: &Credentials,
        path: &StreamPath,
        referer: Option<&str>,
        intake: Intake<F>,
    ) -> Result<Admitted<'_>>
    where
        F: Future<Output = Result<Vec<NewEvent>>>,
    {
        let controls = self.controls(path).await?;
        self.access.decide(
            creds,
            Target::Stream(path),
            Need::Write,
            Some(&controls.settings),
        )?;
        let policy = AppendPolicy {
            engine: self,
            controls,
        };
        let events = match intake {
            Intake::One(read) => {
                policy.limit(path, referer, 1)?;
                let events = read.await?;
                for e in &events {
                    policy.check(e)?;
                }
                events
            }
            Intake::Batch(read) => {
                let events = read.await?;
                policy.limit(path, referer, events.len())?;
                for (i, e) in events.iter().enumerate() {
                    policy.check(e).map_err(|err| {
                        err.context(format_args!("event {i} of the batch"))
                            .with("position", i)
                    })?;
                }
                events
            }
            Intake::Stream => {
                policy.limit(path, referer, 1)?;
                Vec::new()
            }
        };
        Ok(Admitted { events, policy })
    }
}

impl AppendPolicy<'_> {
    /// Checks one event's data (size, content within the JSON limits, event type),
    /// counting a refusal by the type's schema.
    pub fn check(&self, e: &NewEvent) -> Result<()> {
        self.controls
            .check(&e.event_type, &e.content_type, &e.data)
            .inspect_err(|err| {
                if err.details.get("rule").and_then(Value::as_str) == Some("type") {
                    self.engine.access.refused("type");
                }
            })
    }

    /// Waits until one append of the (sub)stream's rate limit is available (a stream
    /// of events paces itself rather than failing half-way).
    pub async fn until_ready(&self, path: &StreamPath) {
        self.controls.until_ready(path).await;
    }

    /// The blocklists, then the rate limit for `n` events; a blocklisted append takes
    /// nothing from the rate limit.
    fn limit(&self, path: &StreamPath, referer: Option<&str>, n: usize) -> Result<()> {
        let c = &self.controls;
        let checked = c
            .check_blocklist(path, referer)
            .and_then(|()| c.check_rate(path, n));
        if let Err(e) = &checked
            && let Some(Value::String(rule)) = e.details.get("rule")
        {
            self.engine.access.refused(rule);
        }
        checked
    }
}
