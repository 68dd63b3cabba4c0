//! The scheduling loop of one leader term: a round every
//! schedule-interval, commands pushed onto the leaders' heartbeat streams.

use std::sync::Arc;

use shale_proto::pdpb;
use tokio::time::MissedTickBehavior;

use super::header;
use super::heartbeat_stream::HeartbeatStreams;
use super::{LeaderTerm, ServerState};
use crate::schedule::CommandSink;

/// Commands go out on the store's Region heartbeat stream, with our header.
struct StreamSink<'a> {
    streams: &'a HeartbeatStreams,
    cluster_id: u64,
}

impl CommandSink for StreamSink<'_> {
    fn send(&self, store_id: u64, mut command: pdpb::RegionHeartbeatResponse) -> bool {
        command.header = Some(header::ok_header(self.cluster_id));
        self.streams.send(store_id, command)
    }
}

/// Runs until the term ends (the caller also aborts it on step-down).
pub async fn run(state: Arc<ServerState>, leader: Arc<LeaderTerm>) {
    let mut ticker = tokio::time::interval(leader.schedule.options().interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let sink = StreamSink {
        streams: &leader.heartbeat_streams,
        cluster_id: leader.cluster.id(),
    };
    loop {
        tokio::select! {
            _ = state.shutting_down() => return,
            _ = leader.stepped_down() => return,
            _ = ticker.tick() => {}
        }
        leader.schedule.tick(&leader.cluster, &sink).await;
    }
}
