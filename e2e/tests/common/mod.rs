//! Shared helpers for the end-to-end tests: clusters serving either API
//! version, clients for them, raw gRPC stubs with a correctly addressed
//! `kvrpcpb::Context`, Region lookups, and polling.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use shale_e2e::Cluster;
use shale_proto::keyspacepb::keyspace_client::KeyspaceClient;
use shale_proto::kvrpcpb::{self, ApiVersion};
use shale_proto::metapb;
use shale_proto::pdpb::{self, pd_client::PdClient};
use shale_proto::tikvpb::tikv_client::TikvClient;
use tikv_client::{
    Backoff, CheckLevel, Config, KvPair, RawClient, RetryOptions, Timestamp, TimestampExt,
    TransactionClient, TransactionOptions,
};
use tonic::transport::Channel;

/// The two client API versions. A cluster serves exactly one of them (the
/// storage node's `api-version`, like TiKV's `storage.api-version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `RawClient::new` / `TransactionClient::new`: keys used verbatim.
    V1,
    /// `Config::default().with_default_keyspace()`: keys carry the keyspace prefix.
    V2,
}

impl Api {
    pub fn config(self) -> Config {
        match self {
            Api::V1 => Config::default(),
            Api::V2 => Config::default().with_default_keyspace(),
        }
    }

    pub fn proto(self) -> ApiVersion {
        match self {
            Api::V1 => ApiVersion::V1,
            Api::V2 => ApiVersion::V2,
        }
    }

    /// The storage-node config (TOML) a cluster serving this API needs:
    /// nothing for API V1, the default.
    pub fn store_config(self) -> &'static str {
        match self {
            Api::V1 => "",
            Api::V2 => "api-version = 2\n",
        }
    }

    /// The version's name as the storage node spells it in errors.
    pub fn name(self) -> &'static str {
        match self {
            Api::V1 => "V1",
            Api::V2 => "V2",
        }
    }
}

/// A one-store cluster serving `api`, with `extra_config` (TOML lines) added
/// to the storage node's config. An API V1 cluster without extra config runs
/// the storage node without a config file: all defaults.
pub async fn start_cluster(api: Api, extra_config: &str) -> Result<Cluster> {
    let config = format!("{}{extra_config}", api.store_config());
    let cluster = if config.is_empty() {
        Cluster::start(1).await
    } else {
        Cluster::start_with_store_config(1, &config).await
    };
    cluster.with_context(|| format!("starting an API {api:?} cluster"))
}

pub async fn raw_client(cluster: &Cluster, api: Api) -> Result<RawClient> {
    let client = match api {
        Api::V1 => RawClient::new(cluster.pd_endpoints()).await,
        Api::V2 => RawClient::new_with_config(cluster.pd_endpoints(), api.config()).await,
    };
    client.with_context(|| format!("connecting a {api:?} raw client"))
}

pub async fn txn_client(cluster: &Cluster, api: Api) -> Result<TransactionClient> {
    let client = match api {
        Api::V1 => TransactionClient::new(cluster.pd_endpoints()).await,
        Api::V2 => TransactionClient::new_with_config(cluster.pd_endpoints(), api.config()).await,
    };
    client.with_context(|| format!("connecting a {api:?} transaction client"))
}

/// Optimistic options that only warn when a failed transaction is dropped
/// (the default panics in `Drop`, which hides the real failure).
pub fn optimistic() -> TransactionOptions {
    TransactionOptions::new_optimistic().drop_check(CheckLevel::Warn)
}

pub fn pessimistic() -> TransactionOptions {
    TransactionOptions::new_pessimistic().drop_check(CheckLevel::Warn)
}

/// Lock backoff long enough to outwait a lock TTL of a few seconds.
pub fn patient() -> RetryOptions {
    RetryOptions::new(
        Backoff::no_jitter_backoff(2, 500, 10),
        Backoff::no_jitter_backoff(50, 500, 40),
    )
}

/// Keys of `pairs` as strings, for readable assertions.
pub fn keys_of(pairs: &[KvPair]) -> Vec<String> {
    pairs
        .iter()
        .map(|p| String::from_utf8_lossy(p.key().into()).into_owned())
        .collect()
}

/// `key` as UTF-8 bytes.
pub fn k(key: &str) -> Vec<u8> {
    key.as_bytes().to_vec()
}

/// Reads `key` in a fresh optimistic transaction at the current timestamp.
pub async fn read(client: &TransactionClient, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let ts = client.current_timestamp().await?;
    let mut snapshot = client.snapshot(ts, optimistic());
    Ok(snapshot.get(key.to_vec()).await?)
}

/// Commits one optimistic transaction putting every pair.
pub async fn commit_puts(
    client: &TransactionClient,
    pairs: &[(Vec<u8>, Vec<u8>)],
) -> Result<Timestamp> {
    let mut txn = client.begin_with_options(optimistic()).await?;
    for (key, value) in pairs {
        txn.put(key.clone(), value.clone()).await?;
    }
    match txn.commit().await {
        Ok(Some(ts)) => Ok(ts),
        Ok(None) => bail!("commit of a non-empty transaction returned no commit timestamp"),
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e.into())
        }
    }
}

/// Waits until no lock is left in `[start, end)`. `commit()` returns once
/// the primary is committed; tikv-client commits the secondaries in the
/// background, so a hand-made request that resolves no locks (or a lock
/// count) must wait for them.
pub async fn wait_for_no_locks(client: &TransactionClient, start: &[u8], end: &[u8]) -> Result<()> {
    let (start, end) = (start.to_vec(), end.to_vec());
    eventually(Duration::from_secs(10), "secondary locks committed", || {
        let (start, end) = (start.clone(), end.clone());
        async move {
            let now = client.current_timestamp().await?;
            Ok(client.scan_locks(&now, start..end, 100).await?.is_empty())
        }
    })
    .await
}

/// Polls `check` until it returns `Ok(true)` or `timeout` passes; the last
/// error or `false` becomes the failure.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = check().await;
        match outcome {
            Ok(true) => return Ok(()),
            Ok(false) if Instant::now() > deadline => {
                bail!("{what}: still false after {timeout:?}")
            }
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{what}: still failing after {timeout:?}")))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A gRPC channel to a `host:port`.
pub async fn channel(addr: &str) -> Result<Channel> {
    Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

pub async fn tikv_stub(addr: &str) -> Result<TikvClient<Channel>> {
    Ok(TikvClient::new(channel(addr).await?).max_decoding_message_size(64 * 1024 * 1024))
}

/// A pdpb stub on the placement leader (found through any member).
pub async fn pd_stub(cluster: &Cluster) -> Result<(PdClient<Channel>, pdpb::RequestHeader)> {
    let (leader_addr, header) = placement_leader_addr(cluster).await?;
    Ok((PdClient::new(channel(&leader_addr).await?), header))
}

/// The placement leader's gRPC address and a request header with the
/// cluster id, asked of each member in turn (a member may be down, paused
/// or cut off while a test injects faults).
async fn placement_leader_addr(cluster: &Cluster) -> Result<(String, pdpb::RequestHeader)> {
    let mut last_error = None;
    for addr in &cluster.pd_addrs {
        match leader_from_member(addr).await {
            Ok(found) => return Ok(found),
            Err(e) => last_error = Some(e.context(format!("asking placement member {addr}"))),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the cluster has no placement member")))
}

async fn leader_from_member(addr: &str) -> Result<(String, pdpb::RequestHeader)> {
    let mut pd = PdClient::new(channel(addr).await?);
    let members = tokio::time::timeout(
        Duration::from_secs(3),
        pd.get_members(pdpb::GetMembersRequest::default()),
    )
    .await
    .context("GetMembers timed out")??
    .into_inner();
    let cluster_id = members.header.map(|h| h.cluster_id).unwrap_or_default();
    if cluster_id == 0 {
        bail!("placement GetMembers returned no cluster id");
    }
    let leader_url = members
        .leader
        .and_then(|l| l.client_urls.into_iter().next())
        .context("placement has no leader")?;
    let header = pdpb::RequestHeader {
        cluster_id,
        sender_id: 0,
    };
    Ok((leader_url.trim_start_matches("http://").to_string(), header))
}

/// Placement's GC safe point (pdpb GetGCSafePoint).
pub async fn gc_safe_point(cluster: &Cluster) -> Result<u64> {
    let (mut pd, header) = pd_stub(cluster).await?;
    let resp = pd
        .get_gc_safe_point(pdpb::GetGcSafePointRequest {
            header: Some(header),
        })
        .await?
        .into_inner();
    if let Some(err) = resp.header.and_then(|h| h.error) {
        bail!("GetGCSafePoint error: {err:?}");
    }
    Ok(resp.safe_point)
}

/// The id placement gives the DEFAULT keyspace (what API V2 clients use).
pub async fn default_keyspace_id(cluster: &Cluster) -> Result<u32> {
    let (leader_addr, header) = placement_leader_addr(cluster).await?;
    let mut ks = KeyspaceClient::new(channel(&leader_addr).await?);
    let resp = ks
        .load_keyspace(shale_proto::keyspacepb::LoadKeyspaceRequest {
            header: Some(header),
            name: "DEFAULT".into(),
        })
        .await?
        .into_inner();
    Ok(resp
        .keyspace
        .context("LoadKeyspace returned no keyspace")?
        .id)
}

/// The memcomparable encoding of `key` (TiKV's `codec::bytes::encode_bytes`):
/// 8-byte groups, each followed by a marker byte `0xFF - padding`, the last
/// group zero-padded. Region boundaries are in this form for transactional
/// keys and for every API V2 key; API V1 raw keys are Region keys verbatim.
pub fn encode_bytes(key: &[u8]) -> Vec<u8> {
    const GROUP: usize = 8;
    let mut out = Vec::with_capacity((key.len() / GROUP + 1) * (GROUP + 1));
    let mut chunks = key.chunks_exact(GROUP);
    for chunk in &mut chunks {
        out.extend_from_slice(chunk);
        out.push(0xFF);
    }
    let rest = chunks.remainder();
    let pad = GROUP - rest.len();
    out.extend_from_slice(rest);
    out.extend(std::iter::repeat_n(0u8, pad));
    out.push(0xFF - pad as u8);
    out
}

/// The Region-space bounds an API V2 cluster splits at for the keyspace
/// `keyspace_id`: its raw range `r` + id .. `r` + id+1 and its transactional
/// range `x` + id .. `x` + id+1 (as PD's keyspace bootstrap does).
pub fn keyspace_bounds(keyspace_id: u32) -> Vec<Vec<u8>> {
    let mut bounds = Vec::new();
    for mode in [b'r', b'x'] {
        for id in [keyspace_id, keyspace_id + 1] {
            let id = id.to_be_bytes();
            bounds.push(encode_bytes(&[mode, id[1], id[2], id[3]]));
        }
    }
    bounds
}

/// Every Region placement knows, in key order (pdpb ScanRegions, no limit).
pub async fn regions(cluster: &Cluster) -> Result<Vec<metapb::Region>> {
    let (mut pd, header) = pd_stub(cluster).await?;
    let resp = pd
        .scan_regions(pdpb::ScanRegionsRequest {
            header: Some(header),
            start_key: Vec::new(),
            end_key: Vec::new(),
            limit: 0,
        })
        .await?
        .into_inner();
    if let Some(err) = resp.header.and_then(|h| h.error) {
        bail!("ScanRegions error: {err:?}");
    }
    let regions: Vec<metapb::Region> = if resp.regions.is_empty() {
        resp.region_metas
    } else {
        resp.regions.into_iter().filter_map(|r| r.region).collect()
    };
    Ok(regions)
}

/// How a key maps into Region space (see [`encode_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMode {
    Raw,
    Txn,
}

/// Everything a hand-made request needs to reach the right Region: each
/// request is routed by its key through placement (GetRegion with the key's
/// Region-space form), as the client library does.
pub struct Target {
    pub api: Api,
    pub keyspace_id: u32,
    /// The Region the last [`Target::route`] found, and its leader.
    pub region: metapb::Region,
    pub leader: metapb::Peer,
    /// A stub to the leader's store.
    pub stub: TikvClient<Channel>,
    pd: PdClient<Channel>,
    header: pdpb::RequestHeader,
    stubs: HashMap<u64, TikvClient<Channel>>,
}

impl Target {
    /// Routed to the Region holding the start of the API's raw key space
    /// (API V1: the empty key; API V2: the keyspace's raw prefix).
    pub async fn new(cluster: &Cluster, api: Api) -> Result<Self> {
        let keyspace_id = match api {
            Api::V1 => 0,
            Api::V2 => default_keyspace_id(cluster).await?,
        };
        let (mut pd, header) = pd_stub(cluster).await?;
        let mut stubs = HashMap::new();
        let home = match api {
            Api::V1 => Vec::new(),
            Api::V2 => encode_bytes(&prefixed(api, keyspace_id, b'r', b"")),
        };
        let (region, leader, stub) = locate(&mut pd, header, &mut stubs, home).await?;
        Ok(Target {
            api,
            keyspace_id,
            region,
            leader,
            stub,
            pd,
            header,
            stubs,
        })
    }

    /// The Region-space form of the wire key `key`.
    pub fn region_key(&self, mode: KeyMode, key: &[u8]) -> Vec<u8> {
        match (self.api, mode) {
            (Api::V1, KeyMode::Raw) => key.to_vec(),
            _ => encode_bytes(key),
        }
    }

    /// Points [`Target::ctx`] and [`Target::stub`] at the Region holding the
    /// wire key `key`, as placement reports it now.
    pub async fn route(&mut self, mode: KeyMode, key: &[u8]) -> Result<()> {
        let region_key = self.region_key(mode, key);
        let (region, leader, stub) =
            locate(&mut self.pd, self.header, &mut self.stubs, region_key).await?;
        self.region = region;
        self.leader = leader;
        self.stub = stub;
        Ok(())
    }

    /// Splits the Region holding the wire key `key` at it (SplitRegion on
    /// the Region's leader), retrying while leadership or routing settles.
    pub async fn split_at(&mut self, mode: KeyMode, key: &[u8]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.route(mode, key).await?;
            let region_key = self.region_key(mode, key);
            if self.region.start_key == region_key {
                return Ok(());
            }
            let resp = self
                .stub
                .split_region(kvrpcpb::SplitRegionRequest {
                    context: Some(self.ctx()),
                    split_keys: vec![key.to_vec()],
                    is_raw_kv: mode == KeyMode::Raw,
                    ..Default::default()
                })
                .await;
            match resp {
                Ok(r) if r.get_ref().region_error.is_none() => return Ok(()),
                Ok(r) if Instant::now() > deadline => {
                    bail!("split refused: {:?}", r.into_inner().region_error)
                }
                Err(e) if Instant::now() > deadline => bail!("split failed: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// A context for the Region of the last [`Target::route`].
    pub fn ctx(&self) -> kvrpcpb::Context {
        kvrpcpb::Context {
            region_id: self.region.id,
            region_epoch: self.region.region_epoch,
            peer: Some(self.leader),
            api_version: self.api.proto() as i32,
            keyspace_id: self.keyspace_id,
            ..Default::default()
        }
    }

    fn prefixed(&self, mode: u8, key: &[u8]) -> Vec<u8> {
        prefixed(self.api, self.keyspace_id, mode, key)
    }

    /// The wire form of a transactional user key (what the client sends).
    pub fn txn_key(&self, key: &[u8]) -> Vec<u8> {
        self.prefixed(b'x', key)
    }

    /// The wire form of a raw user key (what the client sends).
    pub fn raw_key(&self, key: &[u8]) -> Vec<u8> {
        self.prefixed(b'r', key)
    }

    /// Prewrites `mutations` (user keys, all in the primary's Region) at
    /// `start_ts` and never commits them: an abandoned transaction whose
    /// locks stay behind. Routes the Target to the primary's Region.
    pub async fn prewrite(
        &mut self,
        mutations: &[(Vec<u8>, Vec<u8>)],
        primary: &[u8],
        start_ts: u64,
        lock_ttl_ms: u64,
        async_commit: bool,
    ) -> Result<kvrpcpb::PrewriteResponse> {
        let secondaries = if async_commit {
            mutations
                .iter()
                .filter(|(key, _)| key.as_slice() != primary)
                .map(|(key, _)| self.txn_key(key))
                .collect()
        } else {
            Vec::new()
        };
        let primary_key = self.txn_key(primary);
        self.route(KeyMode::Txn, &primary_key).await?;
        let req = kvrpcpb::PrewriteRequest {
            context: Some(self.ctx()),
            mutations: mutations
                .iter()
                .map(|(key, value)| kvrpcpb::Mutation {
                    op: kvrpcpb::Op::Put as i32,
                    key: self.txn_key(key),
                    value: value.clone(),
                    ..Default::default()
                })
                .collect(),
            primary_lock: self.txn_key(primary),
            start_version: start_ts,
            lock_ttl: lock_ttl_ms,
            txn_size: mutations.len() as u64,
            min_commit_ts: if async_commit { start_ts + 1 } else { 0 },
            use_async_commit: async_commit,
            secondaries,
            ..Default::default()
        };
        let resp = self.stub.kv_prewrite(req).await?.into_inner();
        if let Some(err) = &resp.region_error {
            bail!("prewrite got a region error: {err:?}");
        }
        if !resp.errors.is_empty() {
            bail!("prewrite got key errors: {:?}", resp.errors);
        }
        Ok(resp)
    }
}

/// `key` in API `api`'s wire form for key mode `mode` (`r` or `x`).
fn prefixed(api: Api, keyspace_id: u32, mode: u8, key: &[u8]) -> Vec<u8> {
    match api {
        Api::V1 => key.to_vec(),
        Api::V2 => {
            let id = keyspace_id.to_be_bytes();
            let mut out = vec![mode, id[1], id[2], id[3]];
            out.extend_from_slice(key);
            out
        }
    }
}

/// The Region holding `region_key`, its leader, and a stub to the leader's
/// store (found through placement's GetStore, cached in `stubs`).
async fn locate(
    pd: &mut PdClient<Channel>,
    header: pdpb::RequestHeader,
    stubs: &mut HashMap<u64, TikvClient<Channel>>,
    region_key: Vec<u8>,
) -> Result<(metapb::Region, metapb::Peer, TikvClient<Channel>)> {
    let resp = pd
        .get_region(pdpb::GetRegionRequest {
            header: Some(header),
            region_key: region_key.clone(),
            need_buckets: false,
        })
        .await?
        .into_inner();
    if let Some(err) = resp.header.and_then(|h| h.error) {
        bail!("GetRegion({region_key:?}) error: {err:?}");
    }
    let region = resp.region.context("GetRegion returned no region")?;
    let leader = match resp.leader {
        Some(l) if l.id != 0 => l,
        _ => region
            .peers
            .first()
            .cloned()
            .context("GetRegion returned a region without peers")?,
    };
    let stub = match stubs.get(&leader.store_id) {
        Some(stub) => stub.clone(),
        None => {
            let resp = pd
                .get_store(pdpb::GetStoreRequest {
                    header: Some(header),
                    store_id: leader.store_id,
                })
                .await?
                .into_inner();
            if let Some(err) = resp.header.and_then(|h| h.error) {
                bail!("GetStore({}) error: {err:?}", leader.store_id);
            }
            let addr = resp.store.context("GetStore returned no store")?.address;
            let stub = tikv_stub(&addr).await?;
            stubs.insert(leader.store_id, stub.clone());
            stub
        }
    };
    Ok((region, leader, stub))
}

/// The store id a storage node reports on `/status`.
pub async fn store_id(cluster: &Cluster, i: usize) -> Result<u64> {
    let (code, body) = shale_e2e::http_get(&cluster.store_status_addrs[i], "/status").await?;
    if code != 200 {
        bail!("store {i} /status answered {code}: {body}");
    }
    let status: serde_json::Value = serde_json::from_str(&body)?;
    status["store_id"]
        .as_u64()
        .with_context(|| format!("store {i} /status has no store_id: {body}"))
}

/// A timestamp's physical part in milliseconds.
pub fn physical_ms(ts: &Timestamp) -> i64 {
    ts.physical
}

/// A version number as a client timestamp.
pub fn ts_from(version: u64) -> Timestamp {
    Timestamp::from_version(version)
}

/// Index of the storage node whose replicas lead the most Regions, from
/// each node's `/status`.
pub async fn busiest_store(cluster: &Cluster) -> Result<usize> {
    let mut best = (0, 0);
    for (i, addr) in cluster.store_status_addrs.iter().enumerate() {
        let Ok((200, body)) = shale_e2e::http_get(addr, "/status").await else {
            continue;
        };
        let status: serde_json::Value = serde_json::from_str(&body)?;
        let leaders = status["leader_region_ids"].as_array().map_or(0, Vec::len);
        if leaders >= best.1 {
            best = (i, leaders);
        }
    }
    Ok(best.0)
}
