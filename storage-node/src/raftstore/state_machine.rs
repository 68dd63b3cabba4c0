//! A Region replica's state machine: the store's data column families
//! within the Region's range. Each apply writes the data, the applied log id
//! and (when it changed) the Region's metadata in one engine batch.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::RwLock;
use prost::Message;
use serde::{Deserialize, Serialize};
use shale_proto::metapb;

use super::context::{StoreContext, StoreEvent};
use super::initial_state;
use super::keys;
use super::ranges;
use super::types::{
    decode, encode, io_err, CommandResult, Epoch, LogId, RegionCommand, RegionTypes, Snapshot,
    SnapshotMeta, SplitTarget, StoredMembership,
};
use crate::engine::{CfName, EngineBatch, EngineIterator, MetaWrite, Modify, Snapshot as _};
use crate::region::RegionRegistry;

/// The Region's data as sent to a new or lagging replica.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    /// `metapb::Region`, protobuf-encoded.
    region: Vec<u8>,
    records: Vec<(CfName, Vec<u8>, Vec<u8>)>,
}

/// The Region a snapshot is of, read without decoding its records.
pub fn snapshot_region(data: &[u8]) -> io::Result<metapb::Region> {
    #[derive(Deserialize)]
    struct Head {
        region: Vec<u8>,
    }
    let (head, _records): (Head, _) = postcard::take_from_bytes(data).map_err(io_err)?;
    metapb::Region::decode(head.region.as_slice()).map_err(io_err)
}

/// What a replica's peer and its state machine share.
#[derive(Default)]
pub struct ReplicaFlags {
    /// Whether this replica leads its Region (kept current by the peer).
    pub leading: AtomicBool,
    /// Set once openraft has loaded the replica. While it loads, it asks for
    /// the current snapshot only for its metadata: building the data would
    /// copy the whole Region into memory, twice per replica at every start.
    pub opened: AtomicBool,
    /// The leader term in which this replica synced the store's `max_ts`
    /// from the TSO (0: none yet; terms of a leader start at 1).
    pub synced_term: AtomicU64,
    /// Notified when `synced_term` changes.
    pub max_ts_changed: tokio::sync::Notify,
}

pub struct RegionStateMachine {
    region_id: u64,
    ctx: Arc<StoreContext>,
    /// The Region as this replica knows it; shared with the peer.
    region: Arc<RwLock<metapb::Region>>,
    flags: Arc<ReplicaFlags>,
    /// This replica's peer id.
    peer_id: u64,
    /// Whether an applied membership included this replica. A new replica
    /// replays memberships from before it was added: only a membership that
    /// drops it after it was in one means it was removed.
    was_member: bool,
}

fn epoch_of(region: &metapb::Region) -> Epoch {
    let e = region.region_epoch.unwrap_or_default();
    Epoch {
        conf_ver: e.conf_ver,
        version: e.version,
    }
}

/// `region` with its peers set from a Raft membership.
fn with_membership(region: &metapb::Region, membership: &StoredMembership) -> metapb::Region {
    let m = membership.membership();
    let voters: std::collections::BTreeSet<u64> = m.voter_ids().collect();
    let mut peers: Vec<metapb::Peer> = m
        .nodes()
        .map(|(id, node)| metapb::Peer {
            id: *id,
            store_id: node.store_id,
            role: if voters.contains(id) {
                metapb::PeerRole::Voter as i32
            } else {
                metapb::PeerRole::Learner as i32
            },
            ..Default::default()
        })
        .collect();
    peers.sort_by_key(|p| p.id);
    let mut out = region.clone();
    out.peers = peers;
    out
}

/// A Region's peers as comparable facts (id, store, role).
fn peer_set(region: &metapb::Region) -> std::collections::BTreeSet<(u64, u64, i32)> {
    region
        .peers
        .iter()
        .map(|p| (p.id, p.store_id, p.role))
        .collect()
}

impl RegionStateMachine {
    /// Whether this replica currently leads its Region (set by the peer).
    fn leading(&self) -> bool {
        self.flags.leading.load(Ordering::Relaxed)
    }

    /// The state machine of replica `peer_id`; fails if its stored
    /// membership cannot be read (the replica must not start on a guess).
    pub fn new(
        region_id: u64,
        peer_id: u64,
        ctx: Arc<StoreContext>,
        region: Arc<RwLock<metapb::Region>>,
        flags: Arc<ReplicaFlags>,
    ) -> io::Result<Self> {
        let mut sm = RegionStateMachine {
            region_id,
            ctx,
            region,
            flags,
            peer_id,
            was_member: false,
        };
        sm.was_member = sm
            .read_meta::<StoredMembership>(&keys::membership_key(region_id))?
            .is_some_and(|m| sm.includes_self(&m));
        Ok(sm)
    }

    fn includes_self(&self, membership: &StoredMembership) -> bool {
        membership
            .membership()
            .nodes()
            .any(|(id, _)| *id == self.peer_id)
    }

    fn read_meta<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let db = self.ctx.engine.db();
        let cf = db
            .cf_handle("raft")
            .ok_or_else(|| io_err("raft cf missing"))?;
        db.get_cf(cf, key)
            .map_err(io_err)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Applies a split to `region`: the new Regions (left parts) and the
    /// original shrunk to the rightmost part, or why not.
    fn split(
        &self,
        region: &metapb::Region,
        keys: &[Vec<u8>],
        targets: &[SplitTarget],
    ) -> Result<Vec<metapb::Region>, String> {
        let ids: Vec<shale_proto::pdpb::SplitId> = targets
            .iter()
            .map(|t| shale_proto::pdpb::SplitId {
                new_region_id: t.new_region_id,
                new_peer_ids: t.new_peer_ids.clone(),
            })
            .collect();
        crate::region::split_region(region, keys, &ids).map_err(|e| e.to_string())
    }
}

impl RaftSnapshotBuilder<RegionTypes> for RegionStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let engine = self.ctx.engine.clone();
        let region_id = self.region_id;
        let fallback = self.region.read().clone();
        tokio::task::spawn_blocking(move || build(&engine, region_id, fallback))
            .await
            .map_err(io_err)?
    }
}

fn build(
    engine: &crate::engine::RocksEngine,
    region_id: u64,
    fallback: metapb::Region,
) -> io::Result<Snapshot> {
    let snap = engine.snapshot();
    let meta_get = |key: Vec<u8>| snap.get_meta(&key).map_err(io_err);
    let applied: Option<LogId> = meta_get(keys::applied_key(region_id))?
        .map(|v| decode(&v))
        .transpose()?;
    let membership: StoredMembership = meta_get(keys::membership_key(region_id))?
        .map(|v| decode(&v))
        .transpose()?
        .unwrap_or_default();
    let region = match meta_get(crate::region::region_meta_key(region_id))? {
        Some(bytes) => metapb::Region::decode(bytes.as_slice()).map_err(io_err)?,
        None => fallback,
    };
    let mut records = Vec::new();
    let upper = (!region.end_key.is_empty()).then_some(region.end_key.as_slice());
    for cf in CfName::ALL {
        let mut it = snap
            .iter_cf(cf, Some(&region.start_key), upper)
            .map_err(io_err)?;
        let mut valid = it.seek_to_first().map_err(io_err)?;
        while valid {
            records.push((cf, it.key().to_vec(), it.value().to_vec()));
            valid = it.next().map_err(io_err)?;
        }
    }
    let data = encode(&SnapshotData {
        region: region.encode_to_vec(),
        records,
    })?;
    Ok(Snapshot {
        meta: SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
        },
        snapshot: data,
    })
}

impl RaftStateMachine<RegionTypes> for RegionStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let applied = self.read_meta(&keys::applied_key(self.region_id))?;
        let membership = self
            .read_meta(&keys::membership_key(self.region_id))?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<RegionTypes>>> + Unpin + OptionalSend,
    {
        let mut batch = EngineBatch::default();
        let mut responses = Vec::new();
        let mut region = self.region.read().clone();
        let mut region_changed = false;
        let mut new_regions: Vec<metapb::Region> = Vec::new();
        let mut removed = false;
        let mut last = None;
        // Taken at a split, held until the new Regions are registered.
        let mut range_change = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let result = match &entry.payload {
                EntryPayload::Blank => CommandResult::Applied,
                EntryPayload::Normal(RegionCommand::Write { epoch, modifies }) => decide_write(
                    self.region_id,
                    &region,
                    &log_id,
                    epoch,
                    None,
                    modifies,
                    &mut batch,
                ),
                EntryPayload::Normal(RegionCommand::WriteInTerm {
                    epoch,
                    term,
                    modifies,
                }) => decide_write(
                    self.region_id,
                    &region,
                    &log_id,
                    epoch,
                    Some(*term),
                    modifies,
                    &mut batch,
                ),
                EntryPayload::Normal(RegionCommand::Split {
                    epoch,
                    keys,
                    targets,
                }) => {
                    if epoch.version != epoch_of(&region).version {
                        CommandResult::EpochChanged {
                            current: vec![region.encode_to_vec()],
                        }
                    } else {
                        if range_change.is_none() {
                            range_change = Some(self.ctx.range_changes.lock().await);
                        }
                        match self.split(&region, keys, targets) {
                            Ok(parts) => {
                                tracing::info!(
                                    region_id = self.region_id,
                                    index = log_id.index,
                                    parts = %parts
                                        .iter()
                                        .map(|r| format!(
                                            "{} {}",
                                            r.id,
                                            ranges::describe(&r.start_key, &r.end_key)
                                        ))
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                    "split applied"
                                );
                                let current: Vec<Vec<u8>> =
                                    parts.iter().map(|r| r.encode_to_vec()).collect();
                                for part in parts {
                                    if part.id == region.id {
                                        region = part;
                                        region_changed = true;
                                    } else if initial_state::known_here(&self.ctx.engine, part.id)?
                                    {
                                        // Already here by a leader's message
                                        // (with a snapshot), or removed from
                                        // here: the split must not reset it.
                                        tracing::info!(
                                            region_id = part.id,
                                            "split region already known here; not recreated"
                                        );
                                    } else {
                                        batch.meta.extend(initial_state::writes(&part)?);
                                        new_regions.push(part);
                                    }
                                }
                                CommandResult::EpochChanged { current }
                            }
                            Err(e) => {
                                tracing::warn!(region_id = self.region_id, "split rejected: {e}");
                                CommandResult::EpochChanged {
                                    current: vec![region.encode_to_vec()],
                                }
                            }
                        }
                    }
                }
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(log_id), membership.clone());
                    let member = self.includes_self(&stored);
                    removed = self.was_member && !member;
                    self.was_member |= member;
                    batch.meta.push(MetaWrite::Put(
                        keys::membership_key(self.region_id),
                        encode(&stored)?,
                    ));
                    let mut changed = with_membership(&region, &stored);
                    // A group's first membership (bootstrap, split) restates
                    // the Region's peers: only a real change moves conf_ver.
                    if peer_set(&changed) != peer_set(&region) {
                        let mut epoch = changed.region_epoch.unwrap_or_default();
                        epoch.conf_ver += 1;
                        changed.region_epoch = Some(epoch);
                        region = changed;
                        region_changed = true;
                    }
                    CommandResult::Applied
                }
            };
            last = Some(log_id);
            if let Some(responder) = responder {
                responses.push((responder, result));
            }
        }
        let Some(last) = last else {
            return Ok(());
        };
        batch.meta.push(MetaWrite::Put(
            keys::applied_key(self.region_id),
            encode(&last)?,
        ));
        if region_changed {
            batch.meta.push(RegionRegistry::meta_write(&region));
        }
        // Applied entries are already durable in the log: no fsync needed.
        batch.sync = false;
        self.ctx.engine.write_batch(batch).await.map_err(io_err)?;
        if region_changed {
            *self.region.write() = region.clone();
            self.ctx.regions.set_in_memory(region.clone());
        }
        if removed {
            let _ = self.ctx.events.send(StoreEvent::PeerRemoved {
                region_id: self.region_id,
            });
        }
        if !new_regions.is_empty() {
            for part in &new_regions {
                self.ctx.regions.set_in_memory(part.clone());
            }
            let _ = self.ctx.events.send(StoreEvent::SplitApplied {
                regions: new_regions,
                leader: self.leading(),
            });
        }
        for (responder, result) in responses {
            responder.send(result);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        RegionStateMachine {
            region_id: self.region_id,
            ctx: self.ctx.clone(),
            region: self.region.clone(),
            flags: self.flags.clone(),
            peer_id: self.peer_id,
            was_member: self.was_member,
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> io::Result<()> {
        let data: SnapshotData = decode(&snapshot)?;
        let region = metapb::Region::decode(data.region.as_slice()).map_err(io_err)?;
        if region.id != self.region_id {
            return Err(io_err(format!(
                "snapshot of region {} sent to region {}",
                region.id, self.region_id
            )));
        }
        let mut batch = EngineBatch {
            sync: true,
            ..Default::default()
        };
        // The snapshot's range, and whatever else this replica covered that
        // no other Region here owns (a split it never applied): that data
        // belongs to Regions that will reach this store by snapshot too.
        let _ranges = self.ctx.range_changes.lock().await;
        let before = self.region.read().clone();
        let mut stale = vec![(region.start_key.clone(), region.end_key.clone())];
        if before.region_epoch.is_some() {
            stale.extend(ranges::unowned(
                &before,
                &self.ctx.regions,
                std::slice::from_ref(&region),
            ));
        }
        batch.data.extend(ranges::delete_data(stale));
        let records = data.records.len();
        for (cf, key, value) in data.records {
            batch.data.push(Modify::Put(cf, key, value));
        }
        match &meta.last_log_id {
            Some(id) => batch.meta.push(MetaWrite::Put(
                keys::applied_key(self.region_id),
                encode(id)?,
            )),
            None => batch
                .meta
                .push(MetaWrite::Delete(keys::applied_key(self.region_id))),
        }
        batch.meta.push(MetaWrite::Put(
            keys::membership_key(self.region_id),
            encode(&meta.last_membership)?,
        ));
        batch.meta.push(RegionRegistry::meta_write(&region));
        self.ctx.engine.write_batch(batch).await.map_err(io_err)?;
        self.was_member = self.includes_self(&meta.last_membership);
        tracing::info!(
            region_id = self.region_id,
            start = %region.start_key.escape_ascii(),
            end = %region.end_key.escape_ascii(),
            records,
            last_log_id = ?meta.last_log_id,
            "snapshot installed"
        );
        *self.region.write() = region.clone();
        self.ctx.regions.set_in_memory(region);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        // The state machine is persistent: its current state is always a
        // valid (and the newest) snapshot.
        let applied: Option<LogId> = self.read_meta(&keys::applied_key(self.region_id))?;
        let Some(applied) = applied else {
            return Ok(None);
        };
        if !self.flags.opened.load(Ordering::Acquire) {
            let membership = self
                .read_meta(&keys::membership_key(self.region_id))?
                .unwrap_or_default();
            return Ok(Some(Snapshot {
                meta: SnapshotMeta {
                    last_log_id: Some(applied),
                    last_membership: membership,
                },
                snapshot: Vec::new(),
            }));
        }
        self.build_snapshot().await.map(Some)
    }
}

/// Whether a write entry applies at this log position, adding its changes
/// to `batch` if so. Deterministic on every replica: the same Region at the
/// same position, the entry's own term.
fn decide_write(
    region_id: u64,
    region: &metapb::Region,
    log_id: &LogId,
    epoch: &Epoch,
    term: Option<u64>,
    modifies: &[Modify],
    batch: &mut EngineBatch,
) -> CommandResult {
    if term.is_some_and(|t| t != log_id.leader_id.term) {
        tracing::info!(
            region_id,
            index = log_id.index,
            decided_in = term,
            "write refused: decided in another leader term"
        );
        CommandResult::TermChanged
    } else if epoch.version != epoch_of(region).version {
        tracing::info!(
            region_id,
            index = log_id.index,
            proposed = epoch.version,
            current = epoch_of(region).version,
            "write refused: the region's version moved since it was proposed"
        );
        CommandResult::EpochChanged {
            current: vec![region.encode_to_vec()],
        }
    } else if let Some(key) = ranges::first_outside(region, modifies) {
        tracing::warn!(
            region_id,
            key = %key.escape_ascii(),
            "refusing a write with a key outside the region"
        );
        CommandResult::KeyNotInRegion {
            key: key.to_vec(),
            region: region.encode_to_vec(),
        }
    } else {
        batch.data.extend(modifies.iter().cloned());
        CommandResult::Applied
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::raftstore::tests::{region, standalone_context};

    /// A replica a leader's message created, with the range that leader
    /// saw then.
    fn replica(ctx: &Arc<StoreContext>, seen: metapb::Region) -> RegionStateMachine {
        RegionStateMachine::new(
            seen.id,
            seen.id * 10,
            ctx.clone(),
            Arc::new(RwLock::new(seen)),
            Arc::default(),
        )
        .unwrap()
    }

    fn snapshot_of(region: &metapb::Region, key: &[u8]) -> (SnapshotMeta, Vec<u8>) {
        let data = SnapshotData {
            region: region.encode_to_vec(),
            records: vec![(CfName::Default, key.to_vec(), b"v".to_vec())],
        };
        let meta = SnapshotMeta {
            last_log_id: Some(initial_state::initial_log_id()),
            last_membership: StoredMembership::default(),
        };
        (meta, encode(&data).unwrap())
    }

    /// Two Regions split apart before this store held either: the one whose
    /// replica still covers both ranges (it was created from a message sent
    /// before the split) must not delete the other's freshly installed data
    /// as "unowned" while their snapshots install at the same time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_snapshot_installs_keep_each_others_data() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = standalone_context(dir.path());
        let left = region(21, b"a", b"m", &[]);
        let right = region(14, b"m", b"z", &[]);
        let mut left_sm = replica(&ctx, left.clone());
        let mut right_sm = replica(&ctx, region(14, b"a", b"z", &[]));
        let (left_meta, left_data) = snapshot_of(&left, b"b");
        let (right_meta, right_data) = snapshot_of(&right, b"n");
        let (l, r) = tokio::join!(
            left_sm.install_snapshot(&left_meta, left_data),
            right_sm.install_snapshot(&right_meta, right_data),
        );
        l.unwrap();
        r.unwrap();
        let snap = ctx.engine.snapshot();
        assert_eq!(
            snap.get_cf(CfName::Default, b"n").unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(
            snap.get_cf(CfName::Default, b"b").unwrap(),
            Some(b"v".to_vec()),
            "the left Region's data was deleted by the right one's install"
        );
    }
}
