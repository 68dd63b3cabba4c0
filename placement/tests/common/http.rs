//! The PD HTTP API from tests: requests with a timeout, waiting for a
//! condition, and the store / Region views the scheduling tests check.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a scheduling outcome may take to show.
pub const SETTLE: Duration = Duration::from_secs(60);

pub fn api(server_url: &str) -> String {
    format!("{server_url}/pd/api/v1")
}

pub async fn call(method: reqwest::Method, url: &str, body: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn get(url: &str) -> Value {
    let (status, body) = call(reqwest::Method::GET, url, None).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    body
}

/// Retries `check` until it passes or `SETTLE` runs out.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + SETTLE;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreRow {
    pub state: String,
    pub regions: u64,
    pub leaders: u64,
}

/// Every store placement knows, any state.
pub async fn stores(base: &str) -> BTreeMap<u64, StoreRow> {
    let body = get(&format!("{base}/stores?state=0&state=1&state=2")).await;
    body["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["store"]["id"].as_u64().unwrap(),
                StoreRow {
                    state: s["store"]["state_name"].as_str().unwrap().to_string(),
                    regions: s["status"]["region_count"].as_u64().unwrap(),
                    leaders: s["status"]["leader_count"].as_u64().unwrap(),
                },
            )
        })
        .collect()
}

/// Every Region has 3 peers on distinct stores from `allowed`.
pub async fn check_replicas(
    base: &str,
    allowed: &[u64],
    region_count: usize,
) -> Result<(), String> {
    let body = get(&format!("{base}/regions")).await;
    let regions = body["regions"].as_array().unwrap();
    if regions.len() != region_count {
        return Err(format!("{} regions", regions.len()));
    }
    for region in regions {
        let mut stores: Vec<u64> = region["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["store_id"].as_u64().unwrap())
            .collect();
        stores.sort_unstable();
        stores.dedup();
        if stores.len() != 3 || region["peers"].as_array().unwrap().len() != 3 {
            return Err(format!("region {} on {stores:?}", region["id"]));
        }
        if let Some(bad) = stores.iter().find(|s| !allowed.contains(s)) {
            return Err(format!("region {} has a peer on store {bad}", region["id"]));
        }
    }
    Ok(())
}

/// Counts among `ids` differ by at most one.
pub fn even(rows: &BTreeMap<u64, StoreRow>, ids: &[u64], count: impl Fn(&StoreRow) -> u64) -> bool {
    let values: Vec<u64> = ids
        .iter()
        .map(|id| rows.get(id).map_or(0, &count))
        .collect();
    values.iter().max().unwrap_or(&0) - values.iter().min().unwrap_or(&0) <= 1
}

/// Waits until Regions are fully replicated over `ids` with regions and
/// leaders even.
pub async fn wait_balanced(base: &str, ids: &[u64], region_count: usize) {
    eventually("replicated and balanced", || async {
        check_replicas(base, ids, region_count).await?;
        let rows = stores(base).await;
        if even(&rows, ids, |r| r.regions) && even(&rows, ids, |r| r.leaders) {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    })
    .await;
}
