//! `GET /eddy/spy` (API §13): the firehose, every stream of every account at once (an
//! account's internal log streams aside), from the live end unless a cursor or
//! selector says otherwise. Server-Sent Events with `Accept: text/event-stream`; one
//! line per event as plain text with `Accept: text/plain` (each stream in its own
//! ANSI colour with `?color`, for terminals); NDJSON envelopes otherwise. The admin
//! token may spy; anyone on an open server.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use eddy_engine::consumers::{Follow, Start, Subscription};
use eddy_engine::event::DataKind;
use eddy_engine::store::SharedEvent;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::{self, Params};

/// Most characters of an event's data a text line shows.
const LINE_DATA: usize = 200;

/// The colours streams are told apart by: red, green, yellow, blue, magenta, cyan.
const COLOURS: [u8; 6] = [31, 32, 33, 34, 35, 36];

pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let (creds, uri) = crate::auth::credentials(&headers, &uri)?;
    if state.engine.access_enabled() {
        state.engine.authorize_admin(&creds)?;
    }
    if super::sse::wanted(&headers) {
        return super::sse::subscribe(state, Follow::All, &uri, &headers).await;
    }
    let mut q = Params::parse(&uri)?;
    let selector = q.selector()?;
    let after = q.number("after")?;
    let color = q.flag("color")?;
    // (NDJSON and text lines always carry the data; SSE takes data= as usual)
    q.flag("data")?;
    match q.take("follow").as_deref() {
        None | Some("") | Some("true") | Some("1") | Some("forever") => {}
        Some("false") | Some("0") => {
            return Err(ApiError::invalid(
                "the firehose only follows: leave out follow=false (use GET /{acct}/{strm} to \
                 read stored events)",
            ));
        }
        Some(v) => {
            return Err(ApiError::invalid(format!(
                "query parameter follow=\"{v}\" must be true, false or forever (the firehose \
                 always follows)"
            )));
        }
    }
    q.finish()?;
    let text = color || accepts_text(&headers);
    let start = match after {
        Some(p) => Start::After(p),
        None if selector.from.is_some() || selector.since.is_some() => Start::Beginning,
        None => Start::Live,
    };
    let sub = state
        .engine
        .follow(Follow::All, selector, true, start)
        .await?;
    let feed = Feed {
        state,
        sub,
        text,
        color,
    };
    let body = Body::from_stream(futures::stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next().await?;
        Some((Ok::<_, Infallible>(chunk), feed))
    }));
    let content_type = match text {
        true => "text/plain; charset=utf-8",
        false => "application/x-ndjson",
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::VARY, "accept"),
        ],
        body,
    )
        .into_response())
}

/// Whether the Accept header asks for plain text (`text/plain` with a weight above 0).
fn accepts_text(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(params::media_range)
        .any(|(t, s, q)| {
            t.eq_ignore_ascii_case("text") && s.eq_ignore_ascii_case("plain") && q > 0.0
        })
}

/// The subscription as chunks of NDJSON or text lines.
struct Feed {
    state: AppState,
    sub: Subscription,
    text: bool,
    color: bool,
}

impl Feed {
    /// The next chunk; `None` ends the response (the server shuts down, or the
    /// subscription failed).
    async fn next(&mut self) -> Option<Bytes> {
        let state = self.state.clone();
        let events = match self
            .sub
            .next(async move { state.shutting_down().await })
            .await
        {
            Ok(events) if events.is_empty() => return None,
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e.message, "the firehose stopped");
                return None;
            }
        };
        let mut buf = Vec::with_capacity(events.len() * 256);
        for e in &events {
            match self.text {
                true => buf.extend_from_slice(line(e, self.color).as_bytes()),
                false => {
                    buf.extend_from_slice(e.envelope_json());
                    buf.push(b'\n');
                }
            }
        }
        Some(Bytes::from(buf))
    }
}

/// One event as a line: `acct/strm('a') #index type data`, the stream in its colour.
fn line(e: &Arc<SharedEvent>, color: bool) -> String {
    let mut out = String::with_capacity(128);
    if color {
        let _ = write!(out, "\x1b[{}m{}\x1b[0m", colour_of(&e.stream), e.stream);
    } else {
        out.push_str(&e.stream);
    }
    let _ = write!(out, " #{} {} ", e.index, e.event_type);
    match e.kind() {
        DataKind::Binary => {
            let _ = write!(out, "({} bytes of {})", e.data.len(), e.content_type);
        }
        _ => {
            let text = String::from_utf8_lossy(&e.data);
            let mut shown: String = text
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(LINE_DATA)
                .collect();
            if text.chars().count() > LINE_DATA {
                shown.push('…');
            }
            out.push_str(shown.trim_end());
        }
    }
    out.push('\n');
    out
}

/// The ANSI colour of a stream: the same for every line of it.
fn colour_of(stream: &str) -> u8 {
    // FNV-1a: stable across runs and processes, unlike the std hasher
    let hash = stream.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    COLOURS[(hash % COLOURS.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::colour_of;

    #[test]
    fn a_stream_keeps_its_colour() {
        assert_eq!(colour_of("acme/orders"), colour_of("acme/orders"));
        let all: std::collections::HashSet<u8> =
            (0..50).map(|i| colour_of(&format!("acme/s{i}"))).collect();
        assert!(all.len() > 3, "streams spread over the colours: {all:?}");
    }
}
