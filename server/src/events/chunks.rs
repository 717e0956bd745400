//! Byte uploads (API §13): `POST` (or the `PUT` that `curl -T` sends) with
//! `?chunks=true` and a body that is not JSON stores each piece of the body as an
//! event as it arrives, so `some-build | curl -T - '.../log?chunks=true'` streams a
//! log in, readable while it is written. Pieces that arrived together are one write
//! and one event; a piece over the event limit is cut in several; text is cut between
//! characters, never inside one.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use eddy_engine::access::admit::AppendPolicy;
use eddy_engine::event::{self, ContentType, DataKind, MAX_EVENT_DATA};
use eddy_engine::path::StreamPath;
use eddy_engine::{EngineError, ErrorCode};

use super::append::AppendInputs;
use super::ndjson::Ingest;
use crate::AppState;
use crate::body::{Piece, Pieces};
use crate::error::{ApiError, ApiResult};

/// The event type of pieces whose upload names none.
pub const DEFAULT_TYPE: &str = "chunk";

pub async fn ingest<'a>(
    state: &'a AppState,
    path: StreamPath,
    policy: AppendPolicy<'a>,
    inputs: AppendInputs,
    content_type: ContentType,
    body: Body,
) -> ApiResult<Response> {
    if inputs.id.is_some() {
        return Err(ApiError::invalid(
            "Event-Id names one event; the pieces of a chunks=true upload get \
             server-generated ids",
        ));
    }
    if content_type.kind == DataKind::Json {
        return Err(ApiError::invalid(format!(
            "chunks=true stores pieces of a byte or text body, and Content-Type \"{}\" is \
             JSON, which cannot be cut in pieces: send JSON lines as application/x-ndjson",
            content_type.value
        )));
    }
    let event_type = inputs
        .event_type
        .clone()
        .unwrap_or_else(|| DEFAULT_TYPE.into());
    event::check_type(&event_type)?;
    let text = content_type.kind == DataKind::Text;
    // open until every piece is durable: a byte read following the stream ends after
    let _upload = state.uploads.open(&state.engine, &path).await;
    let mut ing = Ingest::new(state, path, policy, inputs, content_type, event_type);
    let mut body = Pieces::new(state, body);
    let mut buf: Vec<u8> = Vec::new();
    let mut pieces = 0u64;
    let mut received = 0u64;
    let mut ended = false;
    while !ended {
        let mut next = Some(body.next(state).await);
        // whatever else has already arrived joins it, up to one event's worth
        while let Some(piece) = next.take() {
            match piece {
                Piece::Data(b) => {
                    received += b.len() as u64;
                    buf.extend_from_slice(&b);
                    if buf.len() < MAX_EVENT_DATA {
                        next = body.ready();
                    }
                }
                Piece::End => ended = true,
                Piece::Stalled(t) => {
                    let stalled = format!(
                        "the upload sent nothing for {} ms (--body-read-timeout-ms); the \
                         {received} bytes received before are stored",
                        t.as_millis()
                    );
                    return Err(ing.stop(crate::body::timed_out(t, stalled)).await);
                }
                Piece::ShuttingDown => {
                    let e = EngineError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "the server is shutting down; the {received} bytes received so \
                             far are stored"
                        ),
                    );
                    return Err(ing.stop(e).await);
                }
                Piece::Broken(e) => {
                    let e = ApiError::invalid(format!(
                        "the request body broke off after {received} bytes: {e}"
                    ));
                    return Err(ing.stop(e).await);
                }
            }
        }
        for data in cut(&mut buf, text, ended) {
            pieces += 1;
            if let Err(e) = ing.push(data, "piece", pieces) {
                return Err(ing.stop(e).await);
            }
        }
        ing.flush().await.map_err(|e| ing.fail(e))?;
    }
    Ok(ing.answer())
}

/// Takes the events `buf` holds: pieces of at most [`MAX_EVENT_DATA`] bytes, cut
/// between characters when `text`. A character still arriving stays in `buf` until
/// the body `ended`; then an incomplete one is stored and refused as invalid text.
fn cut(buf: &mut Vec<u8>, text: bool, ended: bool) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < buf.len() {
        let mut end = (start + MAX_EVENT_DATA).min(buf.len());
        if text
            && let Err(e) = std::str::from_utf8(&buf[start..end])
            && e.error_len().is_none()
        {
            let whole = start + e.valid_up_to();
            if whole > start {
                end = whole;
            } else if !ended {
                break;
            }
        }
        out.push(Bytes::copy_from_slice(&buf[start..end]));
        start = end;
    }
    buf.drain(..start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_between_characters() {
        // "é" is two bytes: the first arrives alone
        let mut buf = b"ab\xc3".to_vec();
        assert_eq!(cut(&mut buf, true, false), vec![Bytes::from_static(b"ab")]);
        assert_eq!(buf, b"\xc3");
        buf.extend_from_slice(b"\xa9!");
        assert_eq!(cut(&mut buf, true, false), vec![Bytes::from("é!")]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_character_still_arriving_waits_and_bytes_do_not() {
        let mut buf = b"\xc3".to_vec();
        assert!(cut(&mut buf, true, false).is_empty());
        assert_eq!(buf, b"\xc3");
        assert_eq!(
            cut(&mut buf, false, false),
            vec![Bytes::from_static(b"\xc3")]
        );
        // at the end, the broken character is stored, so the text check refuses it
        let mut buf = b"\xc3".to_vec();
        assert_eq!(cut(&mut buf, true, true), vec![Bytes::from_static(b"\xc3")]);
    }

    #[test]
    fn large_pieces_are_cut_at_the_event_limit() {
        let mut buf = vec![b'x'; MAX_EVENT_DATA * 2 + 5];
        let out = cut(&mut buf, true, false);
        let lens: Vec<usize> = out.iter().map(Bytes::len).collect();
        assert_eq!(lens, [MAX_EVENT_DATA, MAX_EVENT_DATA, 5]);
        // a two-byte character across the limit moves whole into the next piece
        let mut buf = vec![b'x'; MAX_EVENT_DATA - 1];
        buf.extend_from_slice("é".as_bytes());
        let lens: Vec<usize> = cut(&mut buf, true, true).iter().map(Bytes::len).collect();
        assert_eq!(lens, [MAX_EVENT_DATA - 1, 2]);
    }
}
