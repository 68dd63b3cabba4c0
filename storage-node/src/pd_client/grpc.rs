//! `PdClient` over pdpb gRPC. It asks any endpoint for the members, talks to
//! the leader, and reconnects (re-resolving the leader) when a call fails at
//! the transport level, so a restarted or re-elected placement is followed.

use std::time::Duration;

use parking_lot::Mutex;
use shale_proto::pdpb::pd_client::PdClient as PdStub;
use shale_proto::{metapb, pdpb};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::{PdClient, PdError, PdResult};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

pub struct GrpcPdClient {
    endpoints: Vec<String>,
    cluster_id: u64,
    stub: Mutex<PdStub<Channel>>,
    /// Sender into the current RegionHeartbeat stream, created lazily.
    heartbeats: Mutex<Option<mpsc::Sender<pdpb::RegionHeartbeatRequest>>>,
    /// Where scheduling commands from placement are forwarded.
    commands: Mutex<Option<mpsc::UnboundedSender<pdpb::RegionHeartbeatResponse>>>,
}

fn with_scheme(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

async fn connect_endpoint(url: &str) -> Result<PdStub<Channel>, String> {
    let channel = Endpoint::from_shared(with_scheme(url))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(RPC_TIMEOUT)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(PdStub::new(channel))
}

/// Finds the leader through any reachable endpoint; returns its stub and the cluster id.
async fn connect_leader(endpoints: &[String]) -> PdResult<(PdStub<Channel>, u64)> {
    let mut last_error = String::from("no endpoints given");
    for ep in endpoints {
        let mut stub = match connect_endpoint(ep).await {
            Ok(s) => s,
            Err(e) => {
                last_error = format!("{ep}: {e}");
                continue;
            }
        };
        let members = match stub.get_members(pdpb::GetMembersRequest::default()).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                last_error = format!("{ep}: {e}");
                continue;
            }
        };
        let cluster_id = members.header.as_ref().map_or(0, |h| h.cluster_id);
        // A replicated placement answers from any member but only the leader
        // serves; while it is electing one (or has not created the cluster
        // id yet) there is nothing to connect to.
        let Some(leader) = members.leader.filter(|_| cluster_id != 0) else {
            last_error = format!("{ep}: placement has no leader yet");
            continue;
        };
        for url in &leader.client_urls {
            match connect_endpoint(url).await {
                Ok(stub) => return Ok((stub, cluster_id)),
                Err(e) => last_error = format!("leader {url}: {e}"),
            }
        }
    }
    Err(PdError::Unreachable {
        endpoints: endpoints.to_vec(),
        reason: last_error,
    })
}

fn check_header(header: Option<&pdpb::ResponseHeader>) -> PdResult<()> {
    match header.and_then(|h| h.error.as_ref()) {
        Some(e) if e.r#type() != pdpb::ErrorType::Ok => Err(PdError::Server {
            kind: e.r#type(),
            message: e.message.clone(),
        }),
        _ => Ok(()),
    }
}

impl GrpcPdClient {
    /// Connects, retrying until `deadline` passes (placement may start later).
    pub async fn connect(endpoints: Vec<String>, deadline: Duration) -> PdResult<Self> {
        let started = tokio::time::Instant::now();
        loop {
            match connect_leader(&endpoints).await {
                Ok((stub, cluster_id)) => {
                    return Ok(GrpcPdClient {
                        endpoints,
                        cluster_id,
                        stub: Mutex::new(stub),
                        heartbeats: Mutex::new(None),
                        commands: Mutex::new(None),
                    })
                }
                Err(e) if started.elapsed() >= deadline => return Err(e),
                Err(e) => {
                    tracing::info!("waiting for placement: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn header(&self) -> Option<pdpb::RequestHeader> {
        Some(pdpb::RequestHeader {
            cluster_id: self.cluster_id,
            sender_id: 0,
        })
    }

    fn stub(&self) -> PdStub<Channel> {
        self.stub.lock().clone()
    }

    /// After a transport failure: find the leader again for the next call.
    async fn reconnect(&self) {
        if let Ok((stub, _)) = connect_leader(&self.endpoints).await {
            *self.stub.lock() = stub;
        }
        self.heartbeats.lock().take();
    }

    /// Runs `call` once; on a transport-level failure reconnects and retries once.
    async fn call<T, F, Fut>(&self, call: F) -> PdResult<T>
    where
        F: Fn(PdStub<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match call(self.stub()).await {
            Ok(r) => Ok(r.into_inner()),
            Err(status) if is_transport_error(&status) => {
                self.reconnect().await;
                Ok(call(self.stub()).await?.into_inner())
            }
            Err(status) => Err(status.into()),
        }
    }

    fn heartbeat_sender(&self) -> mpsc::Sender<pdpb::RegionHeartbeatRequest> {
        let mut guard = self.heartbeats.lock();
        if let Some(tx) = guard.as_ref() {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(256);
        let mut stub = self.stub();
        let commands = self.commands.lock().clone();
        tokio::spawn(async move {
            let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
            match stub.region_heartbeat(outbound).await {
                Ok(resp) => {
                    let mut inbound = resp.into_inner();
                    while let Ok(Some(cmd)) = inbound.message().await {
                        let is_command = cmd.change_peer.is_some()
                            || cmd.change_peer_v2.is_some()
                            || cmd.transfer_leader.is_some()
                            || cmd.split_region.is_some();
                        if !is_command {
                            continue;
                        }
                        match &commands {
                            Some(sink) => {
                                let _ = sink.send(cmd);
                            }
                            None => tracing::debug!(
                                region_id = cmd.region_id,
                                "placement command with no one to run it"
                            ),
                        }
                    }
                }
                Err(e) => tracing::warn!("region heartbeat stream failed: {e}"),
            }
        });
        *guard = Some(tx.clone());
        tx
    }
}

fn is_transport_error(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
    )
}

impl PdClient for GrpcPdClient {
    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    async fn alloc_id(&self) -> PdResult<u64> {
        let header = self.header();
        let resp = self
            .call(|mut s| async move { s.alloc_id(pdpb::AllocIdRequest { header }).await })
            .await?;
        check_header(resp.header.as_ref())?;
        Ok(resp.id)
    }

    async fn is_bootstrapped(&self) -> PdResult<bool> {
        let header = self.header();
        let resp = self
            .call(|mut s| async move {
                s.is_bootstrapped(pdpb::IsBootstrappedRequest { header })
                    .await
            })
            .await?;
        check_header(resp.header.as_ref())?;
        Ok(resp.bootstrapped)
    }

    async fn bootstrap(&self, store: metapb::Store, region: metapb::Region) -> PdResult<()> {
        let req = pdpb::BootstrapRequest {
            header: self.header(),
            store: Some(store),
            region: Some(region),
        };
        let resp = self
            .call(|mut s| {
                let req = req.clone();
                async move { s.bootstrap(req).await }
            })
            .await?;
        check_header(resp.header.as_ref())
    }

    async fn put_store(&self, store: metapb::Store) -> PdResult<()> {
        let req = pdpb::PutStoreRequest {
            header: self.header(),
            store: Some(store),
        };
        let resp = self
            .call(|mut s| {
                let req = req.clone();
                async move { s.put_store(req).await }
            })
            .await?;
        check_header(resp.header.as_ref())
    }

    async fn store_heartbeat(
        &self,
        stats: pdpb::StoreStats,
    ) -> PdResult<pdpb::StoreHeartbeatResponse> {
        let req = pdpb::StoreHeartbeatRequest {
            header: self.header(),
            stats: Some(stats),
        };
        let resp = self
            .call(|mut s| {
                let req = req.clone();
                async move { s.store_heartbeat(req).await }
            })
            .await?;
        check_header(resp.header.as_ref())?;
        Ok(resp)
    }

    async fn region_heartbeat(&self, mut req: pdpb::RegionHeartbeatRequest) -> PdResult<()> {
        req.header = self.header();
        let tx = self.heartbeat_sender();
        if tx.send(req).await.is_err() {
            self.reconnect().await;
            return Err(PdError::StreamClosed);
        }
        Ok(())
    }

    async fn ask_batch_split(
        &self,
        region: metapb::Region,
        split_count: u32,
    ) -> PdResult<Vec<pdpb::SplitId>> {
        let req = pdpb::AskBatchSplitRequest {
            header: self.header(),
            region: Some(region),
            split_count,
        };
        let resp = self
            .call(|mut s| {
                let req = req.clone();
                async move { s.ask_batch_split(req).await }
            })
            .await?;
        check_header(resp.header.as_ref())?;
        Ok(resp.ids)
    }

    async fn report_batch_split(&self, regions: Vec<metapb::Region>) -> PdResult<()> {
        let req = pdpb::ReportBatchSplitRequest {
            header: self.header(),
            regions,
        };
        let resp = self
            .call(|mut s| {
                let req = req.clone();
                async move { s.report_batch_split(req).await }
            })
            .await?;
        check_header(resp.header.as_ref())
    }

    async fn get_region_by_id(&self, region_id: u64) -> PdResult<Option<metapb::Region>> {
        let header = self.header();
        let resp = self
            .call(|mut s| async move {
                s.get_region_by_id(pdpb::GetRegionByIdRequest {
                    header,
                    region_id,
                    need_buckets: false,
                })
                .await
            })
            .await?;
        check_header(resp.header.as_ref())?;
        Ok(resp.region)
    }

    async fn get_store(&self, store_id: u64) -> PdResult<metapb::Store> {
        let header = self.header();
        let resp = self
            .call(|mut s| async move {
                s.get_store(pdpb::GetStoreRequest { header, store_id })
                    .await
            })
            .await?;
        check_header(resp.header.as_ref())?;
        resp.store.ok_or(PdError::Server {
            kind: pdpb::ErrorType::Unknown,
            message: format!("placement knows no store {store_id}"),
        })
    }

    fn set_command_sink(&self, sink: mpsc::UnboundedSender<pdpb::RegionHeartbeatResponse>) {
        *self.commands.lock() = Some(sink);
        // The next heartbeat opens a stream that forwards to the new sink.
        self.heartbeats.lock().take();
    }

    async fn gc_safe_point(&self) -> PdResult<u64> {
        let header = self.header();
        let resp = self
            .call(|mut s| async move {
                s.get_gc_safe_point(pdpb::GetGcSafePointRequest { header })
                    .await
            })
            .await?;
        check_header(resp.header.as_ref())?;
        Ok(resp.safe_point)
    }

    async fn get_tso(&self) -> PdResult<u64> {
        let header = self.header();
        let resp = self
            .call(|mut s| async move {
                let request = pdpb::TsoRequest {
                    header,
                    count: 1,
                    dc_location: String::new(),
                };
                let stream = s.tso(tokio_stream::once(request)).await?;
                let mut inbound = stream.into_inner();
                match inbound.message().await? {
                    Some(resp) => Ok(tonic::Response::new(resp)),
                    None => Err(tonic::Status::unavailable(
                        "placement closed the TSO stream",
                    )),
                }
            })
            .await?;
        check_header(resp.header.as_ref())?;
        let ts = resp.timestamp.ok_or(PdError::StreamClosed)?;
        Ok(((ts.physical as u64) << 18) | (ts.logical as u64))
    }
}
