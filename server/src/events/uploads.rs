//! The byte uploads (`?chunks=true`) open on this server, by (sub)stream. A
//! `follow=true` byte read ends once it has sent everything and no upload is open on
//! what it reads. Where nodes share the database, each upload is also recorded there
//! (`Engine::upload_opened`), for readers on the other nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eddy_engine::Engine;
use eddy_engine::path::StreamPath;
use tokio::sync::watch;

#[derive(Default)]
pub struct Uploads {
    /// Open uploads by (sub)stream URL.
    open: Mutex<HashMap<String, usize>>,
    /// Counts closed uploads, to wake the readers waiting for one to close.
    closed: watch::Sender<u64>,
}

/// One open upload; closes when dropped.
pub struct Upload {
    uploads: Arc<Uploads>,
    key: String,
    /// Its record in the shared database, where there is one.
    record: Option<(Arc<Engine>, String)>,
}

impl Uploads {
    pub async fn open(self: &Arc<Self>, engine: &Arc<Engine>, path: &StreamPath) -> Upload {
        let key = path.url();
        *self.lock().entry(key.clone()).or_default() += 1;
        let record = engine
            .upload_opened(path)
            .await
            .map(|id| (engine.clone(), id));
        Upload {
            uploads: self.clone(),
            key,
            record,
        }
    }

    /// Whether an upload is open on `path`, or on any substream when it names a
    /// factory (a plain stream has no substreams, so one rule serves both).
    pub fn any_open(&self, path: &StreamPath) -> bool {
        let url = path.url();
        let open = self.lock();
        if path.args.is_some() {
            return open.contains_key(&url);
        }
        open.keys().any(|k| {
            k.strip_prefix(url.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('('))
        })
    }

    /// Changes each time an upload closes.
    pub fn closings(&self) -> watch::Receiver<u64> {
        self.closed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // the map stays consistent whatever panicked while holding it
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        {
            let mut open = self.uploads.lock();
            if let Some(n) = open.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&self.key);
                }
            }
        }
        self.uploads.closed.send_modify(|n| *n += 1);
        if let Some((engine, id)) = self.record.take() {
            tokio::spawn(async move { engine.upload_closed(&id).await });
        }
    }
}
