//! The engine's Prometheus metrics; the server registers them and renders `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counters and histograms the storage writer updates.
#[derive(Debug)]
pub struct Metrics {
    /// Events durably appended.
    pub events_appended: Counter,
    /// Commits made by the writer (one fsync each).
    pub commits: Counter,
    pub foreign_commits_notified: Counter,
    pub foreign_reads: Counter,
    /// Events per group commit.
    pub group_events: Histogram,
    /// Write requests per group commit.
    pub group_requests: Histogram,
    /// Seconds from a group's first request to the end of its flush.
    pub commit_seconds: Histogram,
    /// Seconds one fdatasync of the WAL takes.
    pub flush_seconds: Histogram,
    /// Live subscriptions to the fan-out: SSE and NDJSON followers, webhooks and pipes.
    pub subscribers: Gauge,
    /// Notices the live fan-out made of two or more commits (see `consumers::hub`).
    pub fanout_merged_notices: Counter,
    /// Webhook delivery attempts, and those that failed (non-2xx, timeout, refused).
    pub webhook_attempts: Counter,
    pub webhook_failures: Counter,
    /// Seconds from an event's commit to its successful webhook delivery.
    pub webhook_lag_seconds: Histogram,
    /// Webhooks paused after their retry budget ran out.
    pub webhooks_paused: Gauge,
    /// Requests refused by access control, rate limits and blocklists, by rule.
    pub refusals: Family<Vec<(String, String)>, Counter>,
    /// JavaScript memory of the reducer sandboxes, as last measured.
    pub reducer_memory_bytes: Gauge,
    /// Leases this node took (on several nodes).
    pub leases_taken: Counter,
    /// Leases this node took from a node that had stopped renewing them.
    pub lease_takeovers: Counter,
    /// Leases this node lost (found taken or expired at a renewal).
    pub leases_lost: Counter,
    /// Leases this node holds.
    pub leases_held: Gauge,
    /// Live nodes this node counted at its last lease round (0 on one server, which
    /// keeps no leases).
    pub cluster_nodes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            events_appended: Counter::default(),
            commits: Counter::default(),
            foreign_commits_notified: Counter::default(),
            foreign_reads: Counter::default(),
            group_events: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            group_requests: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            flush_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            subscribers: Gauge::default(),
            leases_taken: Counter::default(),
            lease_takeovers: Counter::default(),
            leases_lost: Counter::default(),
            leases_held: Gauge::default(),
            cluster_nodes: Gauge::default(),
            fanout_merged_notices: Counter::default(),
            webhook_attempts: Counter::default(),
            webhook_failures: Counter::default(),
            webhook_lag_seconds: Histogram::new(exponential_buckets(0.0005, 4.0, 12)),
            webhooks_paused: Gauge::default(),
            refusals: Family::default(),
            reducer_memory_bytes: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Counts one refusal by `rule` (`credentials`, `account`, `hmac`, `key`,
    /// `rateLimit`, `blocklist.referers`, `blocklist.args`, `type`).
    pub fn refused(&self, rule: &str) {
        self.refusals
            .get_or_create(&vec![("rule".to_owned(), rule.to_owned())])
            .inc();
    }

    /// Registers every metric under the `eddy_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "eddy_events_appended",
            "Events durably appended",
            self.events_appended.clone(),
        );
        registry.register(
            "eddy_commits",
            "Group commits (one fsync each)",
            self.commits.clone(),
        );
        registry.register(
            "eddy_cluster_commits_notified",
            "Other nodes' commits announced to this node's consumers from their \
             notifications alone (several nodes on PostgreSQL)",
            self.foreign_commits_notified.clone(),
        );
        registry.register(
            "eddy_cluster_reads",
            "Reads of other nodes' events back from the database, for this node's live \
             subscribers or a missed notification (several nodes on PostgreSQL)",
            self.foreign_reads.clone(),
        );
        registry.register(
            "eddy_commit_group_events",
            "Events per group commit",
            self.group_events.clone(),
        );
        registry.register(
            "eddy_commit_group_requests",
            "Write requests per group commit",
            self.group_requests.clone(),
        );
        registry.register(
            "eddy_commit_seconds",
            "Time from a group's first request to the end of its flush to disk",
            self.commit_seconds.clone(),
        );
        registry.register(
            "eddy_flush_seconds",
            "Time one fdatasync of the write-ahead log takes",
            self.flush_seconds.clone(),
        );
        registry.register(
            "eddy_fanout_merged_notices",
            "Notices the live fan-out handed its subscribers for two or more commits at once",
            self.fanout_merged_notices.clone(),
        );
        registry.register(
            "eddy_subscribers",
            "Live subscriptions to the fan-out of new events: Server-Sent Events and NDJSON \
             followers, and one for each delivering webhook and each running pipe",
            self.subscribers.clone(),
        );
        registry.register(
            "eddy_webhook_attempts",
            "Webhook delivery attempts",
            self.webhook_attempts.clone(),
        );
        registry.register(
            "eddy_webhook_failures",
            "Webhook delivery attempts that failed (non-2xx answer, timeout, refused)",
            self.webhook_failures.clone(),
        );
        registry.register(
            "eddy_webhook_delivery_lag_seconds",
            "Time from an event's timestamp to its successful webhook delivery",
            self.webhook_lag_seconds.clone(),
        );
        registry.register(
            "eddy_webhooks_paused",
            "Webhooks paused after their retry budget ran out",
            self.webhooks_paused.clone(),
        );
        registry.register(
            "eddy_refused_requests",
            "Requests refused by access control, rate limits, blocklists and event types, by rule",
            self.refusals.clone(),
        );
        registry.register(
            "eddy_reducer_memory_bytes",
            "JavaScript memory the reducer sandboxes of all streams hold, as last measured \
             (bounded by --reducer-memory-total-mb)",
            self.reducer_memory_bytes.clone(),
        );
        registry.register(
            "eddy_leases_taken",
            "Leases on background work this node took (several nodes on PostgreSQL)",
            self.leases_taken.clone(),
        );
        registry.register(
            "eddy_lease_takeovers",
            "Leases this node took over from a node that had stopped renewing them",
            self.lease_takeovers.clone(),
        );
        registry.register(
            "eddy_leases_lost",
            "Leases this node lost: found expired or taken by another node at a renewal",
            self.leases_lost.clone(),
        );
        registry.register(
            "eddy_leases_held",
            "Leases on background work this node holds",
            self.leases_held.clone(),
        );
        registry.register(
            "eddy_cluster_nodes",
            "Live nodes this node counted at its last lease round, between which the rate \
             limits are shared (several nodes on PostgreSQL)",
            self.cluster_nodes.clone(),
        );
    }
}
