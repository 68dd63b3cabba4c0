//! Keeps the store's `max_ts` right across leader changes: a Region's new
//! leader takes a fresh TSO timestamp before it lets async-commit and 1PC
//! prewrites pick commit timestamps, and a background refresh keeps the
//! concurrency manager's view of the TSO current, which caps timestamps
//! from clients (see `storage::concurrency_manager`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::pd_client::PdClient;
use crate::raftstore::MaxTsSync;
use crate::storage::ConcurrencyManager;

/// How often the TSO reference behind the timestamp cap is refreshed.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Syncs the store's concurrency manager from placement's TSO.
pub struct TsoMaxTs<P> {
    pub pd: Arc<P>,
    pub cm: ConcurrencyManager,
}

impl<P: PdClient> TsoMaxTs<P> {
    /// Fetches a timestamp and raises `max_ts` to it.
    pub async fn sync_now(&self) -> Result<(), String> {
        let ts = self.pd.get_tso().await.map_err(|e| e.to_string())?;
        self.cm.sync_to_tso(ts);
        Ok(())
    }

    /// Refreshes the TSO reference until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(REFRESH_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.sync_now().await {
                tracing::debug!("cannot refresh the TSO reference: {e}");
            }
        }
    }
}

impl<P: PdClient> MaxTsSync for Arc<TsoMaxTs<P>> {
    fn sync(&self) -> BoxFuture<'static, Result<(), String>> {
        let this = self.clone();
        Box::pin(async move { this.sync_now().await })
    }
}
