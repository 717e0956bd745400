//! Webhook consumers (API §5): each follows a stream through a selector and posts its
//! events, one per request and in order, to a URL, signed the Standard Webhooks way.
//!
//! A webhook is a row (`store::webhook_writes`) and, while active, one task
//! (`deliver`) that follows the stream with a [`Subscription`](super::Subscription)
//! from the stored cursor. The cursor moves only after a receiver answered 2xx, and is
//! saved through the writer every [`deliver::SAVE_EVERY`] and when the task stops, so
//! deliveries are at least once across restarts (receivers deduplicate on the stable
//! `webhook-id`). After the retry budget the task pauses the webhook, with a log
//! entry; `resume` starts it again from its cursor.

pub mod client;
mod deliver;
pub mod signing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::Engine;
use crate::error::{EngineError, ErrorCode, Result};
use crate::metrics::Metrics;
use crate::order::Index;
use crate::path::{AccountName, Args, StreamName, StreamPath};
use crate::selector::Selector;
use crate::store::webhook_reads;
use crate::store::webhook_writes::{WebhookRow, WebhookWrite, missing};
use signing::Secret;

/// How deliveries are made and retried.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Lets every outbound call (deliveries, and reducers' `request()`, which the engine
    /// configures from this too) reach private, loopback and link-local addresses.
    pub allow_private: bool,
    /// Longest wait for a receiver's answer.
    pub timeout: Duration,
    /// The first retry's delay (then doubling, with jitter).
    pub retry_initial: Duration,
    /// The longest delay between two attempts.
    pub retry_max: Duration,
    /// How long one delivery is retried before the webhook pauses.
    pub retry_budget: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(3600),
            retry_budget: Duration::from_secs(86_400),
        }
    }
}

/// A webhook to create.
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    pub url: String,
    /// A selector query string (`type=a,b&from=3`).
    pub selector: String,
    /// Whole envelopes rather than `{stream, index, type}`.
    pub data: bool,
    /// A `whsec_` secret; one is generated when absent.
    pub secret: Option<String>,
}

/// The answer to a creation: the only time the secret is shown.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedWebhook {
    pub id: String,
    pub secret: String,
}

/// A webhook as listed.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookStatus {
    pub id: String,
    pub stream: String,
    pub url: String,
    pub selector: String,
    pub data: bool,
    /// `active`, `retrying` (the current delivery failed and is retried) or `paused`.
    pub status: &'static str,
    /// Every event at or below this global position was delivered or passed over.
    pub cursor: crate::order::Position,
    #[serde(rename = "pausedReason", skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// Failed attempts of the delivery under way.
    pub failures: u32,
    #[serde(rename = "lastError", skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(rename = "createdAt")]
    pub created_at: i64,
}

/// Most replays under way at once for one webhook.
pub const MAX_REPLAYS: usize = 2;

/// A replay as `POST .../webhooks/{id}/replay` answers it.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookReplay {
    pub id: String,
    pub from: u64,
    pub to: Option<u64>,
}

/// What a running delivery task reports. A std Mutex: never held across `.await`.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub failures: u32,
    pub last_error: Option<String>,
    pub cursor: crate::order::Position,
}

struct Running {
    stop: watch::Sender<bool>,
    progress: Arc<Mutex<Progress>>,
    task: tokio::task::JoinHandle<()>,
}

/// The webhook tasks of the engine.
pub(crate) struct Webhooks {
    settings: WebhookSettings,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    /// By webhook id. A std Mutex: never held across `.await`.
    running: Mutex<HashMap<String, Running>>,
    /// The stop signals of replays under way, by webhook id.
    replays: Mutex<HashMap<String, Vec<watch::Sender<bool>>>>,
}

impl Webhooks {
    pub(crate) fn new(settings: WebhookSettings, metrics: Arc<Metrics>) -> Result<Self> {
        let client = client::client(settings.timeout, settings.allow_private)?;
        Ok(Self {
            settings,
            client,
            metrics,
            running: Mutex::default(),
            replays: Mutex::default(),
        })
    }

    fn replays(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<watch::Sender<bool>>>> {
        self.replays.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the replays of webhook `id` (`None`: of every webhook).
    fn stop_replays(&self, id: Option<&str>) {
        let stopped: Vec<watch::Sender<bool>> = match id {
            Some(id) => self.replays().remove(id).unwrap_or_default(),
            None => self.replays().drain().flat_map(|(_, v)| v).collect(),
        };
        for stop in stopped {
            let _ = stop.send(true);
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops every task; each saves its cursor first.
    pub(crate) async fn stop_all(&self) {
        self.stop_replays(None);
        let tasks: Vec<Running> = self.running().drain().map(|(_, r)| r).collect();
        for r in &tasks {
            let _ = r.stop.send(true);
        }
        for r in tasks {
            if tokio::time::timeout(Duration::from_secs(5), r.task)
                .await
                .is_err()
            {
                tracing::warn!("a webhook task did not stop within 5 s");
            }
        }
    }

    pub(crate) fn stop(&self, id: &str) {
        if let Some(r) = self.running().remove(id) {
            let _ = r.stop.send(true);
        }
    }

    /// Stops one task and waits until it saved its cursor.
    pub(crate) async fn stop_and_wait(&self, id: &str) {
        let running = self.running().remove(id);
        if let Some(r) = running {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
    }
}

/// The stream path a stored webhook follows.
fn row_path(row: &WebhookRow) -> Result<StreamPath> {
    let bad = |e: crate::path::PathError| {
        EngineError::internal(format!("stored webhook {}: {e:?}", row.id))
    };
    Ok(StreamPath {
        account: AccountName::new(&row.account).map_err(bad)?,
        stream: StreamName::new(&row.stream).map_err(bad)?,
        args: (!row.args.is_empty())
            .then(|| Args::parse(&row.args))
            .transpose()
            .map_err(bad)?,
    })
}

fn path_args(path: &StreamPath) -> String {
    path.args.as_ref().map(Args::canonical).unwrap_or_default()
}

impl Engine {
    /// Creates a webhook on a stream, substream or factory and starts its deliveries:
    /// from the live end, or from the start when the selector has `from` or `since`.
    pub async fn create_webhook(
        self: &Arc<Self>,
        path: &StreamPath,
        new: NewWebhook,
    ) -> Result<CreatedWebhook> {
        if new.url.trim().is_empty() {
            return Err(EngineError::invalid(
                "field \"url\" is missing: give the http(s) URL deliveries are posted to",
            ));
        }
        let url = client::check_url(new.url.trim(), self.webhooks.settings.allow_private)?;
        let selector = Selector::parse_query(&new.selector)?;
        if !selector.subs.is_empty() {
            let factory = match self.resolve(path).await? {
                Some(r) => r.info.factory && path.args.is_none(),
                None => path.args.is_none(),
            };
            if !factory {
                return Err(EngineError::invalid(format!(
                    "selector sub= picks substreams of a factory, and {path} is not a factory URL"
                )));
            }
        } else {
            // refuses args on a plain stream
            self.resolve(path).await?;
        }
        let secret = match &new.secret {
            Some(s) => Secret::parse(s)?,
            None => Secret::generate(),
        };
        let replay = selector.from.is_some() || selector.since.is_some();
        let row = WebhookRow {
            id: format!("wh_{}", uuid::Uuid::new_v4().simple()),
            account: path.account.as_str().to_owned(),
            stream: path.stream.as_str().to_owned(),
            args: path_args(path),
            url: url.to_string(),
            selector: selector.to_query(),
            data: new.data,
            secret: secret.to_string(),
            cursor: if replay {
                crate::order::Position::START
            } else {
                self.store.last_position()
            },
            paused: None,
            failures: 0,
            created_at: 0,
        };
        self.store
            .writer
            .webhook(WebhookWrite::Create(Box::new(row.clone())))
            .await?;
        let created = CreatedWebhook {
            id: row.id.clone(),
            secret: row.secret.clone(),
        };
        match &self.cluster {
            None => self.start_webhook(row, None)?,
            Some(_) => {
                self.claim_and_run(&crate::cluster::Work::Webhook(row.id.clone()))
                    .await?;
            }
        }
        Ok(created)
    }

    /// The webhooks of a stream (or substream), oldest first.
    pub async fn webhooks(&self, path: &StreamPath) -> Result<Vec<WebhookStatus>> {
        let rows = webhook_reads::of_stream(
            &self.store.reads,
            path.account.as_str(),
            path.stream.as_str(),
            &path_args(path),
        )
        .await?;
        Ok(rows.iter().map(|r| self.status(r)).collect())
    }

    /// One webhook of a stream; 404 when the stream has no such webhook.
    pub async fn webhook(&self, path: &StreamPath, id: &str) -> Result<WebhookStatus> {
        Ok(self.status(&self.webhook_row(path, id).await?))
    }

    async fn webhook_row(&self, path: &StreamPath, id: &str) -> Result<WebhookRow> {
        let row = webhook_reads::one(
            &self.store.reads,
            id,
            path.account.as_str(),
            path.stream.as_str(),
            &path_args(path),
        )
        .await?;
        row.ok_or_else(|| EngineError::not_found(format!("webhook {id} of {path} does not exist")))
    }

    fn status(&self, row: &WebhookRow) -> WebhookStatus {
        let running = self.webhooks.running();
        let progress = running
            .get(&row.id)
            .map(|r| {
                let p = r.progress.lock().unwrap_or_else(|e| e.into_inner());
                (p.failures, p.last_error.clone(), p.cursor)
            })
            .filter(|_| row.paused.is_none());
        // a paused webhook's failures are the stored count of the delivery that paused it
        let (failures, last_error, cursor) = progress.unwrap_or((row.failures, None, row.cursor));
        let stream = match row.args.as_str() {
            "" => format!("{}/{}", row.account, row.stream),
            args => format!("{}/{}({args})", row.account, row.stream),
        };
        WebhookStatus {
            id: row.id.clone(),
            stream,
            url: row.url.clone(),
            selector: row.selector.clone(),
            data: row.data,
            status: match (&row.paused, failures) {
                (Some(_), _) => "paused",
                (None, 0) => "active",
                (None, _) => "retrying",
            },
            cursor: cursor.max(row.cursor),
            paused_reason: row.paused.clone(),
            failures,
            last_error,
            created_at: row.created_at,
        }
    }

    /// Deletes a webhook and stops its deliveries.
    pub async fn delete_webhook(self: &Arc<Self>, path: &StreamPath, id: &str) -> Result<()> {
        let row = self.webhook_row(path, id).await?;
        self.webhooks.stop(id);
        self.webhooks.stop_replays(Some(id));
        if !self
            .store
            .writer
            .webhook(WebhookWrite::Delete(row.id.clone()))
            .await?
        {
            return Err(missing(id));
        }
        if row.paused.is_some() {
            self.webhooks.metrics.webhooks_paused.dec();
        }
        // where leases are kept: finds the webhook gone and lets its lease go
        self.restart(&crate::cluster::Work::Webhook(row.id)).await?;
        Ok(())
    }

    /// Pauses a webhook by request: the pause is stored (with a log entry) first, then
    /// its deliveries and replays on this node stop, so a failed write leaves it
    /// running; a delivery in flight may complete, and the cursor kept is the further
    /// of the two. A paused webhook is left as it is.
    pub async fn pause_webhook(
        self: &Arc<Self>,
        path: &StreamPath,
        id: &str,
    ) -> Result<WebhookStatus> {
        let row = self.webhook_row(path, id).await?;
        if row.paused.is_some() {
            return Ok(self.status(&row));
        }
        let delivered = self
            .webhooks
            .running()
            .get(&row.id)
            .map(|r| r.progress.lock().unwrap_or_else(|e| e.into_inner()).cursor);
        let reason = "paused by request";
        let entry = serde_json::json!({
            "webhook": row.id,
            "url": row.url,
            "message": format!("webhook {} {reason}", row.id),
        });
        let log = crate::event::NewEvent::log_entry("info", &entry);
        let write = WebhookWrite::Pause {
            id: row.id.clone(),
            cursor: delivered.map_or(row.cursor, |c| c.max(row.cursor)),
            reason: reason.to_owned(),
            failures: 0,
            log: Box::new((path.logs(), log)),
            fence: None,
        };
        // false: deleted, or paused meanwhile (by its retry budget, or another request)
        if self.store.writer.webhook(write).await? {
            self.webhooks.metrics.webhooks_paused.inc();
        }
        self.webhooks.stop_replays(Some(&row.id));
        self.webhooks.stop_and_wait(&row.id).await;
        if self.cluster.is_some() {
            // the owner, wherever it runs, finds the webhook paused and stops
            self.restart(&crate::cluster::Work::Webhook(row.id.clone()))
                .await?;
        }
        self.webhook(path, id).await
    }

    /// Resumes a paused webhook from its cursor (an active one is left as it is).
    pub async fn resume_webhook(
        self: &Arc<Self>,
        path: &StreamPath,
        id: &str,
    ) -> Result<WebhookStatus> {
        let mut row = self.webhook_row(path, id).await?;
        if row.paused.is_some() {
            if !self
                .store
                .writer
                .webhook(WebhookWrite::Resume(row.id.clone()))
                .await?
            {
                return Err(missing(id));
            }
            self.webhooks.metrics.webhooks_paused.dec();
            row.paused = None;
            row.failures = 0;
            match &self.cluster {
                None => self.start_webhook(row.clone(), None)?,
                Some(_) => {
                    let work = crate::cluster::Work::Webhook(row.id.clone());
                    if self.cluster_fence(&work).is_some() {
                        self.restart(&work).await?;
                    } else {
                        self.claim_and_run(&work).await?;
                    }
                }
            }
        }
        Ok(self.status(&row))
    }

    /// Starts the tasks of every active webhook (at open).
    pub(crate) async fn start_webhooks(self: &Arc<Self>) -> Result<()> {
        if self.cluster.is_some() {
            // each runs on the node that takes its lease
            return Ok(());
        }
        for row in webhook_reads::all(&self.store.reads).await? {
            if let Err(e) = row_path(&row) {
                // an account whose name is no longer accepted (see store::repair)
                tracing::warn!(webhook = %row.id, error = %e.message, "a stored webhook is not started");
                continue;
            }
            if row.paused.is_some() {
                self.webhooks.metrics.webhooks_paused.inc();
            } else {
                self.start_webhook(row, None)?;
            }
        }
        Ok(())
    }

    /// Starts webhook `id` as stored, under the lease `fence` (a paused one stays
    /// paused); answers false when it no longer exists.
    pub(crate) async fn run_webhook(
        self: &Arc<Self>,
        id: &str,
        fence: Option<crate::store::cluster::Fence>,
    ) -> Result<bool> {
        self.webhooks.stop_and_wait(id).await;
        let Some(row) = webhook_reads::by_id(&self.store.reads, id).await? else {
            return Ok(false);
        };
        if row.paused.is_none() && row_path(&row).is_ok() {
            self.start_webhook(row, fence)?;
        }
        Ok(true)
    }

    /// Sends events `from..=to` (by index; `to` open: up to the last) of the webhook's
    /// stream that its selector picks to the webhook again, in order, each with the
    /// `webhook-id` of its first delivery (API §14), while the live deliveries go on
    /// from their own cursor. Answers once the replay is recorded; the deliveries
    /// follow, on this node.
    pub async fn replay_webhook(
        self: &Arc<Self>,
        path: &StreamPath,
        id: &str,
        from: u64,
        to: Option<u64>,
    ) -> Result<WebhookReplay> {
        if let Some(to) = to.filter(|to| *to < from) {
            return Err(EngineError::invalid(format!(
                "replay to={to} comes before from={from}: nothing to send"
            ))
            .with("field", "to"));
        }
        let row = self.webhook_row(path, id).await?;
        // replays are work on the account's behalf with no end but the range's: a few
        // at a time per webhook
        let under_way = {
            let mut replays = self.webhooks.replays();
            let list = replays.entry(id.to_owned()).or_default();
            list.retain(|stop| !stop.is_closed());
            list.len()
        };
        if under_way >= MAX_REPLAYS {
            return Err(EngineError::new(
                ErrorCode::Conflict,
                format!(
                    "webhook {id} has {under_way} replays under way, the most it may have; \
                     retry once one has finished"
                ),
            ));
        }
        let mut selector = Selector::parse_query(&row.selector)?;
        selector.from = Some(selector.from.map_or(Index(from), |f| f.max(Index(from))));
        selector.to = match (selector.to, to.map(Index)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let write = WebhookWrite::Replayed {
            id: row.id.clone(),
            from,
            to,
        };
        if !self.store.writer.webhook(write).await? {
            return Err(missing(id));
        }
        let (stop, stop_rx) = watch::channel(false);
        let deliverer = self.deliverer(row, None, stop_rx, Arc::default())?;
        self.webhooks
            .replays()
            .entry(id.to_owned())
            .or_default()
            .push(stop);
        let span = tracing::info_span!("webhook replay", id = %id, from, to);
        tokio::spawn(tracing::Instrument::instrument(
            deliverer.replay(selector),
            span,
        ));
        Ok(WebhookReplay {
            id: id.to_owned(),
            from,
            to,
        })
    }

    /// The delivery task of `row` (not started).
    fn deliverer(
        self: &Arc<Self>,
        row: WebhookRow,
        fence: Option<crate::store::cluster::Fence>,
        stop: watch::Receiver<bool>,
        progress: Arc<Mutex<Progress>>,
    ) -> Result<deliver::Deliverer> {
        let path = row_path(&row)?;
        let secret = Secret::parse(&row.secret)?;
        let url = reqwest::Url::parse(&row.url)
            .map_err(|e| EngineError::internal(format!("stored webhook url {}: {e}", row.url)))?;
        Ok(deliver::Deliverer {
            engine: self.clone(),
            client: self.webhooks.client.clone(),
            settings: self.webhooks.settings.clone(),
            metrics: self.webhooks.metrics.clone(),
            progress,
            stop,
            path,
            secret,
            url,
            row,
            fence,
        })
    }

    fn start_webhook(
        self: &Arc<Self>,
        row: WebhookRow,
        fence: Option<crate::store::cluster::Fence>,
    ) -> Result<()> {
        let (stop, stop_rx) = watch::channel(false);
        let progress = Arc::new(Mutex::new(Progress {
            cursor: row.cursor,
            ..Progress::default()
        }));
        let id = row.id.clone();
        let deliverer = self.deliverer(row, fence, stop_rx, progress.clone())?;
        let span = tracing::info_span!("webhook", id = %id, stream = %deliverer.path);
        let task = tokio::spawn(tracing::Instrument::instrument(deliverer.run(), span));
        let old = self.webhooks.running().insert(
            id,
            Running {
                stop,
                progress,
                task,
            },
        );
        if let Some(old) = old {
            let _ = old.stop.send(true);
        }
        Ok(())
    }
}
