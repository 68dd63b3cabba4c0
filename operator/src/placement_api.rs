//! What the operator asks placement, through its PD-compatible HTTP API
//! under `/pd/api/v1`: the stores and their states, deleting a store, and
//! evict-leader schedulers around a restart.
//!
//! `PlacementApi` is the seam: `HttpPlacement` talks to a real server, the
//! tests use a scripted fake.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

/// A store's state as placement names it (`state_name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreState {
    Up,
    Offline,
    Tombstone,
    /// Up, but no heartbeat for a short while.
    Disconnected,
    /// Up, but no heartbeat for a long while.
    Down,
    Unknown,
}

impl StoreState {
    pub fn parse(name: &str) -> StoreState {
        match name {
            "Up" | "Serving" | "Preparing" => StoreState::Up,
            "Offline" | "Removing" => StoreState::Offline,
            "Tombstone" | "Removed" => StoreState::Tombstone,
            "Disconnected" => StoreState::Disconnected,
            "Down" => StoreState::Down,
            _ => StoreState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::Up => "Up",
            StoreState::Offline => "Offline",
            StoreState::Tombstone => "Tombstone",
            StoreState::Disconnected => "Disconnected",
            StoreState::Down => "Down",
            StoreState::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for StoreState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One store, as much of it as the operator needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    pub id: u64,
    pub address: String,
    pub state: StoreState,
    pub leader_count: u64,
    pub region_count: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("{method} {url}: {source}")]
    Request {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: unexpected response: {message}")]
    Decode { url: String, message: String },
}

/// Placement's HTTP API, addressed by its base URL (`http://host:2379`).
pub trait PlacementApi: Send + Sync + 'static {
    /// Every store placement knows, Tombstone ones included when it lists them.
    fn stores<'a>(&'a self, base: &'a str)
        -> BoxFuture<'a, Result<Vec<StoreInfo>, PlacementError>>;
    /// Start removing a store: it goes Offline, then Tombstone once it holds
    /// no Region.
    fn delete_store<'a>(
        &'a self,
        base: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<(), PlacementError>>;
    /// Stores that have an evict-leader scheduler.
    fn evict_leader_stores<'a>(
        &'a self,
        base: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u64>, PlacementError>>;
    /// Move every leader off a store and keep new ones away.
    fn add_evict_leader<'a>(
        &'a self,
        base: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<(), PlacementError>>;
    /// Let a store hold leaders again. Absent schedulers are not an error.
    fn remove_evict_leader<'a>(
        &'a self,
        base: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<(), PlacementError>>;
}

const API: &str = "/pd/api/v1";
const EVICT_LEADER: &str = "evict-leader-scheduler";

/// The store id in an evict-leader scheduler's name
/// (`evict-leader-scheduler-{id}`).
pub fn evict_leader_store(scheduler: &str) -> Option<u64> {
    scheduler
        .strip_prefix(EVICT_LEADER)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

#[derive(Deserialize)]
struct StoresJson {
    #[serde(default)]
    stores: Vec<StoreJson>,
}

#[derive(Deserialize)]
struct StoreJson {
    store: StoreMetaJson,
    #[serde(default)]
    status: StoreStatusJson,
}

#[derive(Deserialize)]
struct StoreMetaJson {
    id: u64,
    #[serde(default)]
    address: String,
    #[serde(default)]
    state_name: String,
}

#[derive(Default, Deserialize)]
struct StoreStatusJson {
    #[serde(default)]
    leader_count: u64,
    #[serde(default)]
    region_count: u64,
}

/// The real client: plain HTTP inside the cluster, short timeouts so a
/// placement outage slows a reconcile down but never blocks it.
#[derive(Clone, Debug)]
pub struct HttpPlacement {
    client: reqwest::Client,
}

impl HttpPlacement {
    pub fn new(timeout: Duration) -> Result<Self, PlacementError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|source| PlacementError::Request {
                method: "build",
                url: String::new(),
                source,
            })?;
        Ok(HttpPlacement { client })
    }

    async fn send(
        &self,
        method: &'static str,
        request: reqwest::RequestBuilder,
        url: &str,
        missing_ok: bool,
    ) -> Result<String, PlacementError> {
        let response = request
            .send()
            .await
            .map_err(|source| PlacementError::Request {
                method,
                url: url.to_string(),
                source,
            })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|source| PlacementError::Request {
                method,
                url: url.to_string(),
                source,
            })?;
        if status.is_success() || (missing_ok && status == reqwest::StatusCode::NOT_FOUND) {
            Ok(body)
        } else {
            Err(PlacementError::Status {
                method,
                url: url.to_string(),
                status: status.as_u16(),
                body: body.chars().take(512).collect(),
            })
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, PlacementError> {
        let body = self.send("GET", self.client.get(url), url, false).await?;
        serde_json::from_str(&body).map_err(|e| PlacementError::Decode {
            url: url.to_string(),
            message: e.to_string(),
        })
    }
}

impl PlacementApi for HttpPlacement {
    fn stores<'a>(
        &'a self,
        base: &'a str,
    ) -> BoxFuture<'a, Result<Vec<StoreInfo>, PlacementError>> {
        Box::pin(async move {
            let url = format!("{base}{API}/stores");
            let json: StoresJson = self.get_json(&url).await?;
            Ok(json
                .stores
                .into_iter()
                .map(|s| StoreInfo {
                    id: s.store.id,
                    address: s.store.address,
                    state: StoreState::parse(&s.store.state_name),
                    leader_count: s.status.leader_count,
                    region_count: s.status.region_count,
                })
                .collect())
        })
    }

    fn delete_store<'a>(
        &'a self,
        base: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<(), PlacementError>> {
        Box::pin(async move {
            let url = format!("{base}{API}/store/{id}");
            self.send("DELETE", self.client.delete(&url), &url, false)
                .await
                .map(drop)
        })
    }

    fn evict_leader_stores<'a>(
        &'a self,
        base: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u64>, PlacementError>> {
        Box::pin(async move {
            let url = format!("{base}{API}/schedulers");
            let names: Vec<String> = self.get_json(&url).await?;
            Ok(names.iter().filter_map(|n| evict_leader_store(n)).collect())
        })
    }

    fn add_evict_leader<'a>(
        &'a self,
        base: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<(), PlacementError>> {
        Box::pin(async move {
            let url = format!("{base}{API}/schedulers");
            let body = serde_json::json!({ "name": EVICT_LEADER, "store_id": id });
            self.send("POST", self.client.post(&url).json(&body), &url, false)
                .await
                .map(drop)
        })
    }

    fn remove_evict_leader<'a>(
        &'a self,
        base: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<(), PlacementError>> {
        Box::pin(async move {
            let url = format!("{base}{API}/schedulers/{EVICT_LEADER}-{id}");
            self.send("DELETE", self.client.delete(&url), &url, true)
                .await
                .map(drop)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::{delete, get};
    use axum::{Json, Router};
    use serde_json::{json, Value};

    use super::*;

    /// A PD-shaped server: stores with states, evict-leader schedulers.
    #[derive(Default)]
    struct Server {
        states: BTreeMap<u64, &'static str>,
        schedulers: BTreeSet<String>,
    }

    type Shared = Arc<Mutex<Server>>;

    async fn stores(State(s): State<Shared>) -> Json<Value> {
        let s = s.lock().unwrap();
        let stores: Vec<Value> = s
            .states
            .iter()
            .map(|(id, state)| {
                json!({
                    "store": {
                        "id": id,
                        "address": format!("c-storage-{}.c-storage-peer.ns.svc:20160", id - 1),
                        "labels": [],
                        "version": "0.1.0",
                        "state": 0,
                        "state_name": state,
                        "node_state": 1
                    },
                    "status": {
                        "capacity": "10GiB",
                        "leader_count": id * 10,
                        "leader_weight": 1.0,
                        "region_count": id * 20,
                        "is_busy": false
                    }
                })
            })
            .collect();
        Json(json!({ "count": stores.len(), "stores": stores }))
    }

    async fn delete_store(
        State(s): State<Shared>,
        Path(id): Path<u64>,
    ) -> (StatusCode, Json<Value>) {
        let mut s = s.lock().unwrap();
        match s.states.get_mut(&id) {
            Some(state) => {
                *state = "Offline";
                (StatusCode::OK, Json(json!("The store is set as Offline.")))
            }
            None => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "store not found"})),
            ),
        }
    }

    async fn list_schedulers(State(s): State<Shared>) -> Json<Vec<String>> {
        Json(s.lock().unwrap().schedulers.iter().cloned().collect())
    }

    async fn add_scheduler(
        State(s): State<Shared>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        let (Some(name), Some(id)) = (body["name"].as_str(), body["store_id"].as_u64()) else {
            return (StatusCode::BAD_REQUEST, Json(json!({"error": "bad body"})));
        };
        s.lock().unwrap().schedulers.insert(format!("{name}-{id}"));
        (StatusCode::OK, Json(json!("The scheduler is created.")))
    }

    async fn remove_scheduler(State(s): State<Shared>, Path(name): Path<String>) -> StatusCode {
        if s.lock().unwrap().schedulers.remove(&name) {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        }
    }

    async fn serve(server: Server) -> (String, Shared) {
        let shared = Arc::new(Mutex::new(server));
        let app = Router::new()
            .route("/pd/api/v1/stores", get(stores))
            .route("/pd/api/v1/store/{id}", delete(delete_store))
            .route(
                "/pd/api/v1/schedulers",
                get(list_schedulers).post(add_scheduler),
            )
            .route("/pd/api/v1/schedulers/{name}", delete(remove_scheduler))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), shared)
    }

    fn client() -> HttpPlacement {
        HttpPlacement::new(Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn reads_stores_in_pd_shape() {
        let (base, _) = serve(Server {
            states: BTreeMap::from([(1, "Up"), (2, "Offline"), (3, "Tombstone")]),
            ..Default::default()
        })
        .await;
        let stores = client().stores(&base).await.unwrap();
        assert_eq!(stores.len(), 3);
        assert_eq!(
            stores[1],
            StoreInfo {
                id: 2,
                address: "c-storage-1.c-storage-peer.ns.svc:20160".into(),
                state: StoreState::Offline,
                leader_count: 20,
                region_count: 40,
            }
        );
        assert_eq!(stores[2].state, StoreState::Tombstone);
    }

    #[tokio::test]
    async fn deletes_stores_and_reports_missing_ones() {
        let (base, shared) = serve(Server {
            states: BTreeMap::from([(4, "Up")]),
            ..Default::default()
        })
        .await;
        client().delete_store(&base, 4).await.unwrap();
        assert_eq!(shared.lock().unwrap().states[&4], "Offline");
        let err = client().delete_store(&base, 9).await.unwrap_err();
        assert!(
            matches!(err, PlacementError::Status { status: 404, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn evict_leader_round_trip() {
        let (base, shared) = serve(Server {
            schedulers: BTreeSet::from(["balance-leader-scheduler".to_string()]),
            ..Default::default()
        })
        .await;
        let c = client();
        assert!(c.evict_leader_stores(&base).await.unwrap().is_empty());
        c.add_evict_leader(&base, 7).await.unwrap();
        assert!(shared
            .lock()
            .unwrap()
            .schedulers
            .contains("evict-leader-scheduler-7"));
        assert_eq!(c.evict_leader_stores(&base).await.unwrap(), [7]);
        c.remove_evict_leader(&base, 7).await.unwrap();
        assert!(c.evict_leader_stores(&base).await.unwrap().is_empty());
        // Removing again is fine: the goal (no scheduler) holds.
        c.remove_evict_leader(&base, 7).await.unwrap();
    }

    /// A follower that sends everything to the leader with 307, as
    /// placement's followers do.
    async fn follower_of(leader: &str) -> String {
        let leader = leader.to_string();
        let app = Router::new().fallback(move |uri: axum::http::Uri| {
            let target = format!("{leader}{uri}");
            async move {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, target)],
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn follows_a_follower_redirect_to_the_leader() {
        let (leader, shared) = serve(Server {
            states: BTreeMap::from([(1, "Up"), (2, "Up")]),
            ..Default::default()
        })
        .await;
        let follower = follower_of(&leader).await;
        let c = client();
        assert_eq!(c.stores(&follower).await.unwrap().len(), 2);
        // Method and body survive the redirect.
        c.delete_store(&follower, 2).await.unwrap();
        c.add_evict_leader(&follower, 1).await.unwrap();
        let s = shared.lock().unwrap();
        assert_eq!(s.states[&2], "Offline");
        assert!(s.schedulers.contains("evict-leader-scheduler-1"));
    }

    #[tokio::test]
    async fn unreachable_placement_is_an_error_not_a_hang() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = client().stores(&base).await.unwrap_err();
        assert!(matches!(err, PlacementError::Request { .. }), "{err}");
    }

    #[test]
    fn scheduler_names_and_states_parse() {
        assert_eq!(evict_leader_store("evict-leader-scheduler-12"), Some(12));
        assert_eq!(evict_leader_store("evict-leader-scheduler"), None);
        assert_eq!(evict_leader_store("balance-leader-scheduler"), None);
        assert_eq!(StoreState::parse("Tombstone"), StoreState::Tombstone);
        assert_eq!(StoreState::parse("Serving"), StoreState::Up);
        assert_eq!(StoreState::parse("???"), StoreState::Unknown);
    }
}
