//! `POST /{acct}/{strm}[({args})][:{type}]`: one event, an atomic batch, or an NDJSON
//! stream, by Content-Type (API §2).

use std::fmt::Write as _;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use eddy_engine::access::Credentials;
use eddy_engine::access::admit::Intake;
use eddy_engine::event::{
    self, ContentType, ExpectedIndex, MAX_BATCH_BYTES, MAX_EVENT_DATA, NewEvent,
};
use eddy_engine::order::Index;
use eddy_engine::path::StreamPath;
use eddy_engine::{AppendRequest, Appended, EngineError};
use serde_json::json;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::params::{self, Params};

/// The request-wide inputs of an append: from headers, query and path.
pub(super) struct AppendInputs {
    pub event_type: Option<String>,
    pub timestamp: Option<i64>,
    pub id: Option<Uuid>,
    pub expected: ExpectedIndex,
    /// `X-Stream-Metadata`: the metadata of a stream this append creates.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// `?chunks=true`: store the body's pieces as they arrive (a byte upload).
    pub chunks: bool,
    /// `Eddy-Hops` (sent by eddy's webhooks): the origin every event gets.
    pub origin: Option<String>,
}

/// A header by its name as clients write it in docs and errors, and parsed once.
struct Named(&'static str, HeaderName);

const EVENT_TYPE: [Named; 2] = [
    Named("Event-Type", HeaderName::from_static("event-type")),
    Named("ES-EventType", HeaderName::from_static("es-eventtype")),
];
const EVENT_TIMESTAMP: [Named; 1] = [Named(
    "Event-Timestamp",
    HeaderName::from_static("event-timestamp"),
)];
const EVENT_ID: [Named; 2] = [
    Named("Event-Id", HeaderName::from_static("event-id")),
    Named("ES-EventId", HeaderName::from_static("es-eventid")),
];
const EXPECTED_INDEX: [Named; 2] = [
    Named("Expected-Index", HeaderName::from_static("expected-index")),
    Named(
        "ES-ExpectedVersion",
        HeaderName::from_static("es-expectedversion"),
    ),
];

impl AppendInputs {
    fn read(path_type: Option<String>, uri: &Uri, headers: &HeaderMap) -> ApiResult<Self> {
        let mut q = Params::parse(uri)?;
        let pick = |q: &mut Params,
                    query: &'static str,
                    names: &[Named]|
         -> ApiResult<Option<(&'static str, String)>> {
            // every value sent under the name or its alias must agree; errors name
            // the header the client used
            let mut h: Option<(&'static str, String)> = None;
            for Named(name, key) in names {
                for value in headers.get_all(key) {
                    // UTF-8, as curl and browsers send it (an event type may be any
                    // text; `?raw` sends it back the same way)
                    let value = std::str::from_utf8(value.as_bytes()).map_err(|_| {
                        ApiError::invalid(format!("header {name} is not valid UTF-8 text"))
                    })?;
                    let value = value.trim();
                    match &h {
                        Some((first, v)) if v != value => {
                            return Err(ApiError::invalid(format!(
                                "{query} is given twice with different values: header {first}: \
                                 \"{v}\" and header {name}: \"{value}\""
                            )));
                        }
                        Some(_) => {}
                        None => h = Some((*name, value.to_owned())),
                    }
                }
            }
            let p = q.take(query).map(|v| (query, v));
            match (h, p) {
                (Some(h), Some(p)) if h.1 != p.1 => Err(ApiError::invalid(format!(
                    "{} is given twice with different values: header {}: \"{}\" and query {}=\"{}\"",
                    query, h.0, h.1, p.0, p.1
                ))),
                (h, p) => Ok(h.or(p)),
            }
        };
        let ty = pick(&mut q, "event-type", &EVENT_TYPE)?;
        let event_type = match (path_type, ty) {
            (Some(p), Some((src, t))) if p != t => {
                return Err(ApiError::invalid(format!(
                    "event type is given twice: \"{p}\" in the path and \"{t}\" in {src}"
                )));
            }
            (Some(p), _) => Some(p),
            (None, t) => t.map(|t| t.1),
        };
        let timestamp = pick(&mut q, "timestamp", &EVENT_TIMESTAMP)?
            .map(|(src, v)| event::parse_timestamp(src, &v))
            .transpose()?;
        let id = pick(&mut q, "event-id", &EVENT_ID)?
            .map(|(src, v)| event::parse_event_id(src, &v))
            .transpose()?;
        let expected = pick(&mut q, "expected-index", &EXPECTED_INDEX)?
            .map(|(src, v)| ExpectedIndex::parse(src, &v))
            .transpose()?
            .unwrap_or_default();
        let mut given = headers.get_all("x-stream-metadata").iter();
        let metadata = given
            .next()
            .map(|v| eddy_engine::settings::metadata_header(v.as_bytes()))
            .transpose()?;
        if given.next().is_some() {
            return Err(ApiError::invalid(
                "header X-Stream-Metadata is given more than once: send one JSON object",
            ));
        }
        let chunks = q.flag("chunks")?;
        q.finish()?;
        let origin = match headers.get(eddy_engine::HOPS_HEADER) {
            None => None,
            Some(v) => {
                let hops = (v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "header Eddy-Hops {:?} is not a whole number of steps",
                            String::from_utf8_lossy(v.as_bytes())
                        ))
                    })?;
                eddy_engine::appended_origin(hops)?
            }
        };
        Ok(Self {
            chunks,
            origin,
            event_type,
            timestamp,
            id,
            expected,
            metadata,
        })
    }

    /// The event type every event of a single or NDJSON append gets.
    pub(super) fn required_type(&self) -> ApiResult<String> {
        let t = self.event_type.clone().unwrap_or_default();
        event::check_type(&t)?;
        Ok(t)
    }
}

pub async fn post(
    state: AppState,
    creds: Credentials,
    path: StreamPath,
    path_type: Option<String>,
    uri: &Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let started = Instant::now();
    let result = post_inner(&state, &creds, path, path_type, uri, headers, body).await;
    state
        .metrics
        .append_seconds
        .observe(started.elapsed().as_secs_f64());
    if result.is_err() {
        state.metrics.append_errors.inc();
    }
    result
}

async fn post_inner(
    state: &AppState,
    creds: &Credentials,
    path: StreamPath,
    path_type: Option<String>,
    uri: &Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    params::refuse_content_coding(&headers)?;
    let inputs = AppendInputs::read(path_type, uri, &headers)?;
    let (raw_ct, media) = params::media_type(&headers)?;
    let referer = headers.get(header::REFERER).and_then(|v| v.to_str().ok());
    // the engine's append policy decides write access before the body is read
    if inputs.chunks {
        if media == "application/x-ndjson" {
            return Err(ApiError::invalid(
                "an NDJSON body is stored line by line as it arrives already: send it \
                 without chunks=true",
            ));
        }
        let ct = ContentType::parse(raw_ct.as_deref())?;
        let admitted = state
            .engine
            .admit_append(creds, &path, referer, Intake::<NoRead>::Stream)
            .await?;
        return super::chunks::ingest(state, path, admitted.policy, inputs, ct, body).await;
    }
    match media.as_str() {
        "application/vnd.eddy.events+json" | "application/vnd.eventstore.events+json" => {
            let es = media == "application/vnd.eventstore.events+json";
            let read = async {
                let body = crate::body::read(state, body, MAX_BATCH_BYTES, "a batch")
                    .await
                    .map_err(|e| e.0)?;
                super::batch::parse(&body, es, &inputs).map_err(|e| e.0)
            };
            let admitted = state
                .engine
                .admit_append(creds, &path, referer, Intake::Batch(read))
                .await?;
            let appended = append(state, &path, admitted.events, &inputs).await?;
            Ok(batch_response(&path, &appended))
        }
        "application/x-ndjson" => {
            let admitted = state
                .engine
                .admit_append(creds, &path, referer, Intake::<NoRead>::Stream)
                .await?;
            super::ndjson::ingest(state, path, admitted.policy, inputs, body).await
        }
        _ => {
            let read = async {
                let ct = ContentType::parse(raw_ct.as_deref())?;
                let event_type = inputs.required_type().map_err(|e| e.0)?;
                let data = crate::body::read(state, body, MAX_EVENT_DATA, "an event")
                    .await
                    .map_err(|e| e.0)?;
                Ok(vec![NewEvent {
                    id: inputs.id,
                    event_type,
                    content_type: ct.value,
                    data,
                    timestamp: inputs.timestamp,
                    metadata: None,
                    origin: inputs.origin.clone(),
                }])
            };
            let admitted = state
                .engine
                .admit_append(creds, &path, referer, Intake::One(read))
                .await?;
            let appended = append(state, &path, admitted.events, &inputs).await?;
            // the answer of every single-event POST, written out directly: the same
            // JSON as `json!` gives, without building a map first
            let e = appended.events[0];
            let mut body = format!(
                r#"{{"index":{},"timestamp":{},"id":"{}""#,
                e.index, e.timestamp, e.id
            );
            if appended.duplicate {
                body.push_str(r#","duplicate":true"#);
            }
            body.push('}');
            let json = [(header::CONTENT_TYPE, "application/json")];
            Ok(located(
                &path,
                e.index,
                (StatusCode::CREATED, json, body).into_response(),
            ))
        }
    }
}

/// Whether a `PUT` is a byte upload (`?chunks=true`, as `curl -T` sends it) rather
/// than the resource's own `PUT`.
pub fn is_upload(uri: &Uri) -> bool {
    Params::parse(uri)
        .and_then(|mut q| q.flag("chunks"))
        .unwrap_or(false)
}

/// The reader type of an intake that reads nothing up front (NDJSON).
type NoRead = std::future::Ready<Result<Vec<NewEvent>, EngineError>>;

pub(super) async fn append(
    state: &AppState,
    path: &StreamPath,
    events: Vec<NewEvent>,
    inputs: &AppendInputs,
) -> ApiResult<Appended> {
    Ok(state
        .engine
        .append(AppendRequest {
            stream: path.clone(),
            events,
            expected: inputs.expected,
            metadata: inputs.metadata.clone(),
        })
        .await?)
}

/// 201 with `Location` of the event at `index`.
pub(super) fn created(path: &StreamPath, index: Index, body: serde_json::Value) -> Response {
    located(
        path,
        index,
        (StatusCode::CREATED, axum::Json(body)).into_response(),
    )
}

/// `resp` with `Location` of the event at `index`.
fn located(path: &StreamPath, index: Index, mut resp: Response) -> Response {
    let mut location = path.url();
    // (fmt::Write on a String cannot fail)
    let _ = write!(location, "/{index}");
    if let Ok(v) = HeaderValue::try_from(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

pub(super) fn batch_response(path: &StreamPath, appended: &Appended) -> Response {
    let first = appended
        .events
        .iter()
        .map(|e| e.index)
        .min()
        .unwrap_or_default();
    let last = appended
        .events
        .iter()
        .map(|e| e.index)
        .max()
        .unwrap_or_default();
    let mut body = json!({"first": first, "last": last, "count": appended.events.len()});
    if appended.duplicate {
        body["duplicate"] = true.into();
    }
    created(path, first, body)
}
