//! The rules of an append that do not depend on the database: the shape of the path,
//! ids within a batch, what a retried request answers, the expected index and the
//! timestamps. Every backend applies them, in this order, to what it has stored.

use super::apply::{Appended, AppendedEvent};
use crate::error::{EngineError, Result};
use crate::event::{ExpectedIndex, NewEvent};
use crate::path::StreamPath;

/// Refuses an append whose shape does not fit the stream: args on a plain stream, or
/// none on a factory.
pub(crate) fn check_factory_shape(path: &StreamPath, factory: bool) -> Result<()> {
    match (factory, path.args.is_some()) {
        (true, false) => Err(EngineError::invalid(format!(
            "{path} is a stream factory: append to one of its substreams, such as \
             /{path}('id')"
        ))),
        (false, true) => Err(EngineError::invalid(format!(
            "{}/{} is a plain stream, not a factory, so it takes no arguments ({path})",
            path.account, path.stream
        ))),
        _ => Ok(()),
    }
}

/// Refuses a batch in which two events have the same id.
pub(crate) fn distinct_ids(events: &[NewEvent]) -> Result<()> {
    for (i, e) in events.iter().enumerate() {
        let Some(id) = e.id else { continue };
        if let Some(j) = events[..i].iter().position(|p| p.id == Some(id)) {
            return Err(EngineError::invalid(format!(
                "events {j} and {i} of the batch have the same id {id}"
            ))
            .with("position", i));
        }
    }
    Ok(())
}

/// Given, for each event of a batch, the stored event with its id (if any): the
/// answer to a retried request when every event is stored already, `None` when none
/// is, and a conflict when the batch mixes stored and new events.
pub(crate) fn duplicates(
    path: &StreamPath,
    stored: Vec<Option<AppendedEvent>>,
) -> Result<Option<Appended>> {
    let found = stored.iter().filter(|d| d.is_some()).count();
    if found == 0 {
        return Ok(None);
    }
    if found == stored.len() {
        return Ok(Some(Appended {
            events: stored.into_iter().flatten().collect(),
            duplicate: true,
        }));
    }
    let (i, d) = stored
        .iter()
        .enumerate()
        .find_map(|(i, d)| d.map(|d| (i, d)))
        .expect("found > 0");
    Err(EngineError::conflict(format!(
        "event {i} of the batch has id {} which is already stored at index {} of {path}, \
         but other events of the batch are new; nothing was written",
        d.id, d.index
    ))
    .with("position", i)
    .with("index", d.index))
}

/// Refuses an append whose `Expected-Index` does not hold for a (sub)stream whose next
/// event gets `next_index`.
pub(crate) fn check_expected(
    path: &StreamPath,
    expected: ExpectedIndex,
    next_index: u64,
) -> Result<()> {
    let ok = match expected {
        ExpectedIndex::Any => true,
        ExpectedIndex::NoEvents => next_index == 0,
        ExpectedIndex::Last(n) => next_index == n.get() + 1,
    };
    if ok {
        return Ok(());
    }
    let wanted = match expected {
        ExpectedIndex::NoEvents => "no events".to_owned(),
        ExpectedIndex::Last(n) => format!("last index {n}"),
        ExpectedIndex::Any => unreachable!("Any always holds"),
    };
    let last_index = next_index as i64 - 1;
    Err(EngineError::conflict(format!(
        "Expected-Index wanted {wanted} but the last index of {path} is {last_index}; \
         nothing was written"
    ))
    .with("lastIndex", last_index))
}

/// The timestamps of a batch appended after one stamped `last_ts`, at time `now`:
/// each event's own, or `now` (never before the last one); refused when an event's
/// own is before the last one.
pub(crate) fn timestamps(
    path: &StreamPath,
    events: &[NewEvent],
    mut last_ts: i64,
    now: i64,
) -> Result<Vec<i64>> {
    let mut stamped = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let ts = match e.timestamp {
            Some(t) if t < last_ts => {
                let at = if events.len() > 1 {
                    format!("event {i} of the batch: ")
                } else {
                    String::new()
                };
                return Err(EngineError::conflict(format!(
                    "{at}timestamp {t} is before the last timestamp {last_ts} of {path}; \
                     timestamps never decrease within a stream"
                ))
                .with("lastTimestamp", last_ts)
                .with("position", i));
            }
            Some(t) => t,
            None => now.max(last_ts),
        };
        last_ts = ts;
        stamped.push(ts);
    }
    Ok(stamped)
}
