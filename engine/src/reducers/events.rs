//! The events a reducer folds, as the sandbox takes them.

use std::borrow::Cow;

use super::worker::Group;
use crate::error::Result;
pub(super) use crate::store::fold_source::FoldRow as Row;
use crate::store::fold_source::{BatchOf, FoldSource};

impl Row {
    /// The event as the sandbox takes it: `id` is this row's id as text and `data`
    /// its data as [`for_reducer`](super::data::for_reducer) converted it.
    pub(super) fn event_in<'a>(
        &'a self,
        stream: &'a str,
        id: &'a str,
        data: &'a (Cow<'a, str>, Option<&'static str>),
        args_json: Option<&'a str>,
    ) -> eddy_runtime_js::EventIn<'a> {
        eddy_runtime_js::EventIn {
            stream,
            index: self.idx,
            id,
            event_type: &self.event_type,
            timestamp: self.ts,
            content_type: &self.content_type,
            data_json: &data.0,
            encoding: data.1,
            args_json,
        }
    }
}

/// Up to `limit` events of `group`'s stream at positions up to `head`: a factory's
/// after position `from_pos`, a plain stream's after index `after_idx`.
pub(super) fn read_batch(
    source: &FoldSource,
    group: &mut Group,
    from_pos: i64,
    after_idx: i64,
    head: i64,
    limit: i64,
) -> Result<Vec<Row>> {
    let stream_id = group.reducers.first().map_or(0, |r| r.row.stream_id);
    let of = if group.factory {
        BatchOf::Factory {
            stream_id,
            after_pos: from_pos,
        }
    } else {
        if group.plain_sid.is_none() {
            group.plain_sid = source.plain_substream(stream_id)?;
        }
        let Some(sid) = group.plain_sid else {
            return Ok(Vec::new());
        };
        BatchOf::Plain { sid, after_idx }
    };
    source.batch(of, head, limit)
}
