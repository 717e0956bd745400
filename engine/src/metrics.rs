//! The engine's Prometheus metrics; the server registers them and renders `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counters and histograms the storage writer updates.
#[derive(Debug)]
pub struct Metrics {
    /// Events durably appended.
    pub events_appended: Counter,
    /// Commits made by the writer (one fsync each).
    pub commits: Counter,
    /// Events per group commit.
    pub group_events: Histogram,
    /// Write requests per group commit.
    pub group_requests: Histogram,
    /// Seconds from a group's first request to the end of its flush.
    pub commit_seconds: Histogram,
    /// Seconds one fdatasync of the WAL takes.
    pub flush_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            events_appended: Counter::default(),
            commits: Counter::default(),
            group_events: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            group_requests: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            flush_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
        }
    }
}

impl Metrics {
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
    }
}
