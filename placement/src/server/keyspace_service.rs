//! `keyspacepb.Keyspace`: LoadKeyspace (API V2 clients call it on connect).

use std::sync::Arc;

use shale_proto::keyspacepb;
use shale_proto::keyspacepb::keyspace_server::Keyspace;
use tonic::{Request, Response, Status};

use super::ServerState;

pub struct KeyspaceService {
    state: Arc<ServerState>,
}

impl KeyspaceService {
    pub fn new(state: Arc<ServerState>) -> Self {
        KeyspaceService { state }
    }
}

#[tonic::async_trait]
impl Keyspace for KeyspaceService {
    async fn load_keyspace(
        &self,
        request: Request<keyspacepb::LoadKeyspaceRequest>,
    ) -> Result<Response<keyspacepb::LoadKeyspaceResponse>, Status> {
        let req = request.into_inner();
        self.state
            .reply("LoadKeyspace", req.header, move |leader| async move {
                Ok(keyspacepb::LoadKeyspaceResponse {
                    keyspace: Some(leader.cluster.load_keyspace(&req.name)?),
                    ..Default::default()
                })
            })
            .await
    }
}
