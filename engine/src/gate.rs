//! One heavy job at a time per account: splice previews and approvals, and `at=`
//! answers, each fold a whole history or a long part of one on one of a few threads
//! shared by every account. An account waits for its own job before it takes one of
//! them, so a tenant whose jobs are slow (or hostile) holds one of them at most, and
//! the others stay free for everyone else. And a budget of the single writer's time
//! per account for what holds it long: splice approvals and pipe replays.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Result;

#[derive(Default)]
pub(crate) struct AccountGates {
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl AccountGates {
    /// Waits until `account` has no other job of this kind running; the job runs while
    /// the answer is held.
    pub(crate) async fn enter(&self, account: &str) -> Result<OwnedSemaphorePermit> {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            // the gates nobody holds or waits for go (a permit holds its gate)
            gates.retain(|_, g| Arc::strong_count(g) > 1);
            gates
                .entry(account.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(1)))
                .clone()
        };
        gate.acquire_owned()
            .await
            .map_err(|_| crate::reducers::stopped())
    }
}

/// Events each account may write in big transactions of the single writer per
/// [`WINDOW`](WriteBudget::WINDOW): a splice approval or a pipe replay writes all it
/// makes in one, and every account's appends wait for it (about 4 s for a million
/// events), so one account's jobs get at most this share of the writer, and the others
/// the rest.
pub(crate) struct WriteBudget {
    /// Events per window; 0 for no limit.
    limit: u64,
    spent: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
}

impl WriteBudget {
    pub(crate) const WINDOW: Duration = Duration::from_secs(600);

    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            spent: Mutex::default(),
        }
    }

    /// The events per window.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether `account` may write `n` events now: `Err` with the seconds until it may.
    /// A job larger than the whole budget may run when nothing else was written in the
    /// window. Callers hold the account's [`AccountGates`] between this and
    /// [`spend`](Self::spend), so that two jobs of one account cannot both pass.
    pub(crate) fn room(&self, account: &str, n: u64) -> Result<(), u64> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        spent.retain(|_, jobs| {
            while jobs
                .front()
                .is_some_and(|j| now.saturating_duration_since(j.0) >= Self::WINDOW)
            {
                jobs.pop_front();
            }
            !jobs.is_empty()
        });
        let Some(jobs) = spent.get(account) else {
            return Ok(());
        };
        let mut total: u64 = jobs.iter().map(|j| j.1).sum();
        if total.saturating_add(n) <= self.limit {
            return Ok(());
        }
        // the oldest jobs leave the window one by one, until what is left and `n` fit
        for (at, events) in jobs {
            total -= events;
            if total == 0 || total.saturating_add(n) <= self.limit {
                let free = (*at + Self::WINDOW).saturating_duration_since(now);
                return Err(free.as_secs() + 1);
            }
        }
        Ok(())
    }

    /// Takes back the `n` events last counted for `account`, whose job did not write
    /// them.
    pub(crate) fn give_back(&self, account: &str, n: u64) {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(jobs) = spent.get_mut(account)
            && let Some(at) = jobs.iter().rposition(|j| j.1 == n)
        {
            jobs.remove(at);
        }
    }

    /// Counts `n` events written for `account` now.
    pub(crate) fn spend(&self, account: &str, n: u64) {
        if self.limit == 0 || n == 0 {
            return;
        }
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        (spent.entry(account.to_owned()).or_default()).push_back((Instant::now(), n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_writes_its_budget_then_waits_and_others_go_on() {
        let budget = WriteBudget::new(1000);
        assert_eq!(budget.room("acme", 600), Ok(()));
        budget.spend("acme", 600);
        assert_eq!(budget.room("acme", 400), Ok(()));
        budget.spend("acme", 400);
        let wait = budget.room("acme", 1).unwrap_err();
        assert!((599..=601).contains(&wait), "{wait}");
        assert_eq!(budget.room("bob", 1000), Ok(()), "another account goes on");
        // a job larger than the budget runs only on an empty window
        assert_eq!(budget.room("bob", 5000), Ok(()));
        budget.spend("bob", 5000);
        assert!(budget.room("bob", 1).is_err());
        // a job that did not write gives its count back
        budget.give_back("bob", 5000);
        assert_eq!(budget.room("bob", 1000), Ok(()));
        // no limit
        let free = WriteBudget::new(0);
        free.spend("acme", u64::MAX);
        assert_eq!(free.room("acme", u64::MAX), Ok(()));
    }

    #[tokio::test]
    async fn one_job_per_account_and_idle_gates_go() {
        let gates = AccountGates::default();
        let a = gates.enter("acme").await.unwrap();
        // another account goes on; the same account waits
        let b = gates.enter("bob").await.unwrap();
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), gates.enter("acme"));
        assert!(
            again.await.is_err(),
            "acme's second job waits for its first"
        );
        drop(a);
        let a2 = gates.enter("acme").await.unwrap();
        drop((a2, b));
        // nothing held: the next entry sweeps both gates away
        let _c = gates.enter("carol").await.unwrap();
        assert_eq!(gates.gates.lock().unwrap().len(), 1);
    }
}
