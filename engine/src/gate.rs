//! One heavy job at a time per account: splice previews and approvals, and `at=`
//! answers, each fold a whole history or a long part of one on one of a few threads
//! shared by every account. An account waits for its own job before it takes one of
//! them, so a tenant whose jobs are slow (or hostile) holds one of them at most, and
//! the others stay free for everyone else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

#[cfg(test)]
mod tests {
    use super::*;

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
