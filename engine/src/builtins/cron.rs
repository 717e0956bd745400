//! Cron schedules (croner) and the ticker that appends `tick` events to
//! `/eddy/cron('{expr}')` while something follows the stream.
//!
//! Expressions have 5 fields (minute first) or 6 (seconds first), in UTC, with Vixie
//! semantics: day-of-month and day-of-week are ORed when both are restricted, and 0 and
//! 7 both mean Sunday. croner implements exactly that, where the `cron` crate needs a
//! seconds field and ANDs the day fields.
//!
//! A cron stream ticks only while it has users: each pipe from it and each subscription
//! to it holds a [`CronGuard`]; the first guard starts the expression's ticker task and
//! the last one to drop stops it. A ticker that starts (after a restart, or when a cron
//! stream is followed again) appends at most one catch-up tick, for the latest
//! occurrence it missed since its last tick, and never every missed tick.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde_json::json;

use crate::error::{EngineError, Result};
use crate::event::{ExpectedIndex, NewEvent, derived_id};
use crate::store::writer::WriterHandle;
use crate::store::{AppendRequest, Reads, read};

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

impl Schedule {
    /// Parses a 5- or 6-field expression; a malformed one is a 400 naming the field
    /// `expr` and croner's reason.
    pub fn parse(expr: &str) -> Result<Self> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .dom_and_dow(false)
            .build();
        let fields = expr.split_whitespace().count();
        let cron = if expr.trim_start().starts_with('@') || (5..=6).contains(&fields) {
            parser.parse(expr).map_err(|e| e.to_string())
        } else {
            Err(format!(
                "it has {fields} fields; a cron expression has 5 (minute hour day-of-month month \
                 day-of-week) or 6 (seconds first)"
            ))
        };
        let cron = cron.map_err(|why| {
            EngineError::invalid(format!("cron expression '{expr}' is not valid: {why}"))
                .with("field", "expr")
                .with("value", expr)
        })?;
        // an expression that never matches (`0 0 31 2 *`) would make a ticker spin
        if cron.find_next_occurrence(&Utc::now(), false).is_err() {
            return Err(EngineError::invalid(format!(
                "cron expression '{expr}' never matches a date"
            ))
            .with("field", "expr")
            .with("value", expr));
        }
        Ok(Self {
            expr: expr.to_owned(),
            cron,
        })
    }

    /// The expression as given.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first occurrence strictly after `ms` (unix milliseconds).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let t = Utc.timestamp_millis_opt(ms).single()?;
        self.cron
            .find_next_occurrence(&t, false)
            .ok()
            .map(|t: DateTime<Utc>| t.timestamp_millis())
    }

    /// The latest occurrence at or before `ms`.
    pub fn latest_at_or_before(&self, ms: i64) -> Option<i64> {
        let t = Utc.timestamp_millis_opt(ms).single()?;
        self.cron
            .find_previous_occurrence(&t, true)
            .ok()
            .map(|t: DateTime<Utc>| t.timestamp_millis())
    }
}

/// The tick event for the occurrence at `ms`; its id is derived from the expression
/// and the occurrence, so an occurrence is never appended twice.
fn tick(expr: &str, ms: i64) -> NewEvent {
    NewEvent {
        id: Some(derived_id(
            ms,
            &[b"cron", expr.as_bytes(), ms.to_string().as_bytes()],
        )),
        event_type: "tick".into(),
        content_type: "application/json".into(),
        data: json!({ "timestamp": ms }).to_string().into(),
        timestamp: None,
        metadata: None,
        origin: None,
    }
}

/// The running tickers, one per expression with users.
#[derive(Clone)]
pub(crate) struct Tickers {
    inner: Arc<Mutex<HashMap<String, Ticker>>>,
    writer: WriterHandle,
    reads: Reads,
}

struct Ticker {
    /// Subscriptions and pipes keeping it ticking.
    subscribers: usize,
    pipes: usize,
    task: tokio::task::JoinHandle<()>,
}

/// The most cron streams that subscriptions alone may keep ticking at once: anyone may
/// follow a cron stream, and each one that ticks stores a tick an occurrence for good.
pub const MAX_SUBSCRIBED_TICKERS: usize = 64;

/// Keeps a cron stream ticking while held.
pub struct CronGuard {
    tickers: Tickers,
    expr: String,
    subscriber: bool,
}

impl Drop for CronGuard {
    fn drop(&mut self) {
        let Ok(mut map) = self.tickers.inner.lock() else {
            return;
        };
        if let Some(t) = map.get_mut(&self.expr) {
            match self.subscriber {
                true => t.subscribers -= 1,
                false => t.pipes -= 1,
            }
            if t.subscribers + t.pipes == 0 {
                t.task.abort();
                map.remove(&self.expr);
            }
        }
    }
}

impl Tickers {
    pub(crate) fn new(writer: WriterHandle, reads: Reads) -> Self {
        Self {
            inner: Arc::default(),
            writer,
            reads,
        }
    }

    /// Registers a user of `schedule`, starting its ticker when it is the first; `None`
    /// when a subscription would start one past [`MAX_SUBSCRIBED_TICKERS`].
    pub(crate) fn acquire(&self, schedule: &Schedule, subscriber: bool) -> Option<CronGuard> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let expr = schedule.expr().to_owned();
        match map.get_mut(&expr) {
            Some(t) if subscriber => t.subscribers += 1,
            Some(t) => t.pipes += 1,
            None => {
                let subscribed = map.values().filter(|t| t.pipes == 0).count();
                if subscriber && subscribed >= MAX_SUBSCRIBED_TICKERS {
                    return None;
                }
                let task = tokio::spawn(run(
                    schedule.clone(),
                    self.writer.clone(),
                    self.reads.clone(),
                ));
                let ticker = Ticker {
                    subscribers: usize::from(subscriber),
                    pipes: usize::from(!subscriber),
                    task,
                };
                map.insert(expr.clone(), ticker);
            }
        }
        Some(CronGuard {
            tickers: self.clone(),
            expr,
            subscriber,
        })
    }

    /// Stops every ticker (at shutdown, before the writer stops).
    pub(crate) fn stop_all(&self) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (_, t) in map.drain() {
            t.task.abort();
        }
    }
}

/// The occurrence of the last tick appended for `expr`, if any.
async fn last_tick(reads: &Reads, expr: &str) -> Result<Option<i64>> {
    let path = super::cron_stream(expr);
    let args = path
        .args
        .as_ref()
        .map(|a| a.canonical())
        .unwrap_or_default();
    let data = read::last_data(reads, path.account.as_str(), path.stream.as_str(), &args).await?;
    Ok(data.and_then(|d| {
        serde_json::from_slice::<serde_json::Value>(&d)
            .ok()?
            .get("timestamp")?
            .as_i64()
    }))
}

async fn run(schedule: Schedule, writer: WriterHandle, reads: Reads) {
    let expr = schedule.expr().to_owned();
    let path = super::cron_stream(&expr);
    let append = |ms: i64| {
        writer.append(AppendRequest {
            metadata: None,
            stream: path.clone(),
            events: vec![tick(&expr, ms)],
            expected: ExpectedIndex::Any,
        })
    };
    let now = chrono::Utc::now().timestamp_millis();
    let mut last = match last_tick(&reads, &expr).await {
        Ok(last) => last,
        Err(e) => {
            tracing::error!(error = %e.message, cron = %expr, "cannot read the last tick");
            None
        }
    };
    // at most one catch-up tick: the latest occurrence missed since the last tick
    if let (Some(prev), Some(missed)) = (last, schedule.latest_at_or_before(now))
        && missed > prev
    {
        match append(missed).await {
            Ok(_) => last = Some(missed),
            Err(e) => tracing::warn!(error = %e.message, cron = %expr, "catch-up tick failed"),
        }
    }
    let mut from = last.unwrap_or(now).max(now);
    loop {
        let Some(next) = schedule.next_after(from) else {
            return;
        };
        let wait = next - chrono::Utc::now().timestamp_millis();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        // an occurrence whose append fails (the disk, a shutdown) is skipped, not retried
        if let Err(e) = append(next).await {
            tracing::warn!(error = %e.message, cron = %expr, "tick failed");
        }
        from = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn five_fields_are_minutes_in_utc() {
        let s = Schedule::parse("30 9 * * *").unwrap();
        assert_eq!(
            s.next_after(at("2026-11-22T10:00:00Z")),
            Some(at("2026-11-23T09:30:00Z"))
        );
    }

    #[test]
    fn six_fields_start_with_seconds() {
        let s = Schedule::parse("*/10 * * * * *").unwrap();
        assert_eq!(
            s.next_after(at("2026-11-22T10:00:05Z")),
            Some(at("2026-11-22T10:00:10Z"))
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_are_ored() {
        // the 1st of the month or any Monday: 2026-11-23 is a Monday
        let s = Schedule::parse("0 0 1 * 1").unwrap();
        assert_eq!(
            s.next_after(at("2026-11-22T12:00:00Z")),
            Some(at("2026-11-23T00:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-11-30T12:00:00Z")),
            Some(at("2026-12-01T00:00:00Z"))
        );
    }

    #[test]
    fn zero_and_seven_are_sunday() {
        // 2026-11-22 is a Sunday
        for expr in ["0 12 * * 0", "0 12 * * 7"] {
            let s = Schedule::parse(expr).unwrap();
            assert_eq!(
                s.next_after(at("2026-11-21T12:00:00Z")),
                Some(at("2026-11-22T12:00:00Z")),
                "{expr}"
            );
        }
    }

    #[test]
    fn malformed_expressions_name_the_field() {
        for expr in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * *",
            "a b c d e",
            "0 0 31 2 *",
        ] {
            let e = Schedule::parse(expr).unwrap_err();
            assert_eq!(e.details.get("field"), Some(&json!("expr")), "{expr}");
            assert!(e.message.contains("cron expression"), "{}", e.message);
        }
    }

    #[test]
    fn the_latest_missed_occurrence() {
        let s = Schedule::parse("0 * * * *").unwrap();
        assert_eq!(
            s.latest_at_or_before(at("2026-11-22T10:59:00Z")),
            Some(at("2026-11-22T10:00:00Z"))
        );
    }
}
