//! Reads a key's whole MVCC history (`MvccGetByKey`, TiKV's debugging
//! RPC) from the leader of its Region, routed through placement the way a
//! client library does, retrying on Region errors.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shale_proto::keyspacepb::{keyspace_client::KeyspaceClient, LoadKeyspaceRequest};
use shale_proto::kvrpcpb::{self, ApiVersion};
use shale_proto::pdpb;
use shale_proto::tikvpb::tikv_client::TikvClient;
use shale_storage_node::codec::encode_bytes;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::cluster::connect;

/// One committed record of a key: a Put, Delete, Lock or Rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub commit_ts: u64,
    pub start_ts: u64,
    pub op: kvrpcpb::Op,
    /// The value of a Put (inlined or from the default column family).
    pub value: Option<Vec<u8>>,
}

/// A key's MVCC state: its lock, if any, and every record, newest first.
#[derive(Debug, Clone, Default)]
pub struct KeyHistory {
    pub lock: Option<kvrpcpb::MvccLock>,
    pub versions: Vec<Version>,
}

impl KeyHistory {
    /// Puts and Deletes in commit order (oldest first).
    pub fn data_versions(&self) -> Vec<&Version> {
        let mut out: Vec<&Version> = self
            .versions
            .iter()
            .filter(|v| matches!(v.op, kvrpcpb::Op::Put | kvrpcpb::Op::Del))
            .collect();
        out.sort_by_key(|v| v.commit_ts);
        out
    }

    /// The value a snapshot read at `ts` must return.
    pub fn visible_at(&self, ts: u64) -> Option<Vec<u8>> {
        self.data_versions()
            .into_iter()
            .rev()
            .find(|v| v.commit_ts <= ts)
            .and_then(|v| v.value.clone())
    }

    /// The commit record of the transaction `start_ts`, if it has one.
    pub fn committed(&self, start_ts: u64) -> Option<&Version> {
        self.versions
            .iter()
            .find(|v| v.start_ts == start_ts && !matches!(v.op, kvrpcpb::Op::Rollback))
    }
}

pub struct MvccClient {
    pd_endpoints: Vec<String>,
    api: ApiVersion,
    keyspace_id: u32,
    state: Mutex<Route>,
}

#[derive(Default)]
struct Route {
    pd: Option<(
        shale_proto::pdpb::pd_client::PdClient<Channel>,
        Option<pdpb::RequestHeader>,
    )>,
    stores: HashMap<u64, TikvClient<Channel>>,
}

impl MvccClient {
    pub async fn connect(pd_endpoints: Vec<String>, keyspace: bool) -> Result<Self> {
        let (api, keyspace_id) = if keyspace {
            (ApiVersion::V2, default_keyspace_id(&pd_endpoints).await?)
        } else {
            (ApiVersion::V1, 0)
        };
        Ok(MvccClient {
            pd_endpoints,
            api,
            keyspace_id,
            state: Mutex::new(Route::default()),
        })
    }

    /// The key as the wire carries it (API V2: with the keyspace prefix of
    /// the key mode, `x` or `r`).
    fn wire_key(&self, mode: u8, key: &[u8]) -> Vec<u8> {
        match self.api {
            ApiVersion::V2 => {
                let id = self.keyspace_id.to_be_bytes();
                let mut out = vec![mode, id[1], id[2], id[3]];
                out.extend_from_slice(key);
                out
            }
            _ => key.to_vec(),
        }
    }

    /// A transactional key as the check knows it, from its wire form.
    pub fn txn_key_of_wire(&self, wire: &[u8]) -> Vec<u8> {
        match self.api {
            ApiVersion::V2 => wire.get(4..).unwrap_or_default().to_vec(),
            _ => wire.to_vec(),
        }
    }

    /// Where placement routes the raw key `key` now (for anomaly reports).
    pub async fn describe_raw(&self, key: &[u8]) -> String {
        let wire = self.wire_key(b'r', key);
        let region_key = match self.api {
            ApiVersion::V2 => encode_bytes(&wire),
            _ => wire,
        };
        match self.locate(&region_key).await {
            Ok((region, leader, _)) => format!(
                "region {} (epoch {:?}, peers on stores {:?}), leader on store {}",
                region.id,
                region.region_epoch.map(|e| (e.conf_ver, e.version)),
                region.peers.iter().map(|p| p.store_id).collect::<Vec<_>>(),
                leader.store_id
            ),
            Err(e) => format!("region unknown: {e}"),
        }
    }

    /// The whole MVCC history of the transactional key `key`, retrying
    /// until `timeout`.
    pub async fn history(&self, key: &[u8], timeout: Duration) -> Result<KeyHistory> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            match self.try_history(key).await {
                Ok(h) => return Ok(h),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!(
                        "reading the MVCC history of {}",
                        String::from_utf8_lossy(key)
                    )))
                }
                Err(_) => {
                    self.reset_routes().await;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// The request context and a stub for the leader of the Region holding
    /// the transactional key `key`, and `key` as the wire carries it.
    pub async fn route_txn_key(
        &self,
        key: &[u8],
    ) -> Result<(kvrpcpb::Context, TikvClient<Channel>, Vec<u8>)> {
        let wire = self.wire_key(b'x', key);
        let (region, leader, stub) = self.locate(&encode_bytes(&wire)).await?;
        let context = kvrpcpb::Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer: Some(leader),
            api_version: self.api as i32,
            keyspace_id: self.keyspace_id,
            ..Default::default()
        };
        Ok((context, stub, wire))
    }

    /// Forgets the cached placement connection and stores (after an error).
    pub async fn reset_routes(&self) {
        let mut route = self.state.lock().await;
        route.pd = None;
        route.stores.clear();
    }

    async fn try_history(&self, key: &[u8]) -> Result<KeyHistory> {
        let (context, mut stub, wire) = self.route_txn_key(key).await?;
        let req = kvrpcpb::MvccGetByKeyRequest {
            context: Some(context),
            key: wire,
        };
        let resp = tokio::time::timeout(Duration::from_secs(5), stub.mvcc_get_by_key(req))
            .await
            .context("MvccGetByKey timed out")??
            .into_inner();
        if let Some(e) = resp.region_error {
            bail!("region error: {}", e.message);
        }
        if !resp.error.is_empty() {
            bail!("MvccGetByKey: {}", resp.error);
        }
        let info = resp.info.unwrap_or_default();
        let long_values: HashMap<u64, Vec<u8>> = info
            .values
            .into_iter()
            .map(|v| (v.start_ts, v.value))
            .collect();
        let versions = info
            .writes
            .into_iter()
            .map(|w| {
                let op = kvrpcpb::Op::try_from(w.r#type).unwrap_or(kvrpcpb::Op::Lock);
                let value = (op == kvrpcpb::Op::Put).then(|| {
                    if w.short_value.is_empty() {
                        long_values.get(&w.start_ts).cloned().unwrap_or_default()
                    } else {
                        w.short_value
                    }
                });
                Version {
                    commit_ts: w.commit_ts,
                    start_ts: w.start_ts,
                    op,
                    value,
                }
            })
            .collect();
        Ok(KeyHistory {
            lock: info.lock,
            versions,
        })
    }

    /// The Region holding `region_key`, its leader and a stub to its store.
    async fn locate(
        &self,
        region_key: &[u8],
    ) -> Result<(
        shale_proto::metapb::Region,
        shale_proto::metapb::Peer,
        TikvClient<Channel>,
    )> {
        let mut guard = self.state.lock().await;
        let route = &mut *guard;
        if route.pd.is_none() {
            route.pd = Some(connect(&self.pd_endpoints).await?);
        }
        let (pd, header) = route.pd.as_mut().context("placement")?;
        let header = *header;
        let resp = pd
            .get_region(pdpb::GetRegionRequest {
                header,
                region_key: region_key.to_vec(),
                need_buckets: false,
            })
            .await?
            .into_inner();
        let region = resp
            .region
            .context("placement knows no Region for the key")?;
        let leader = resp
            .leader
            .filter(|l| l.id != 0)
            .context("the Region has no leader right now")?;
        if let Some(stub) = route.stores.get(&leader.store_id) {
            return Ok((region, leader, stub.clone()));
        }
        let store = pd
            .get_store(pdpb::GetStoreRequest {
                header,
                store_id: leader.store_id,
            })
            .await?
            .into_inner()
            .store
            .context("placement does not know the leader's store")?;
        let channel = Channel::from_shared(format!("http://{}", store.address))?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .with_context(|| format!("connecting to store {}", store.address))?;
        let stub = TikvClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        route.stores.insert(leader.store_id, stub.clone());
        Ok((region, leader, stub))
    }
}

async fn default_keyspace_id(endpoints: &[String]) -> Result<u32> {
    let (_, header) = connect(endpoints).await?;
    let mut last = None;
    for endpoint in endpoints {
        let url = if endpoint.contains("://") {
            endpoint.clone()
        } else {
            format!("http://{endpoint}")
        };
        let mut client = match KeyspaceClient::connect(url).await {
            Ok(c) => c,
            Err(e) => {
                last = Some(anyhow::Error::new(e));
                continue;
            }
        };
        match client
            .load_keyspace(LoadKeyspaceRequest {
                header,
                name: "DEFAULT".into(),
            })
            .await
        {
            Ok(resp) => {
                return resp
                    .into_inner()
                    .keyspace
                    .map(|k| k.id)
                    .context("placement has no DEFAULT keyspace")
            }
            Err(e) => last = Some(anyhow::Error::new(e)),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no placement endpoint")))
}
