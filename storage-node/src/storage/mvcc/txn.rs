//! `MvccTxn`: the changes one command makes, collected as engine `Modify`s
//! and applied in one atomic write.

use crate::engine::{CfName, Modify};
use crate::storage::concurrency_manager::MemLockGuard;

use super::{lock_key, versioned_key, Lock, Write};

#[derive(Default)]
pub struct MvccTxn {
    modifies: Vec<Modify>,
    /// User keys whose locks this command removes (to wake lock waiters).
    released: Vec<Vec<u8>>,
    /// In-memory locks (async commit / 1PC) held until the write is durable.
    guards: Vec<MemLockGuard>,
}

impl MvccTxn {
    pub fn new() -> Self {
        MvccTxn::default()
    }

    pub fn put_lock(&mut self, key: &[u8], lock: &Lock) {
        self.modifies
            .push(Modify::Put(CfName::Lock, lock_key(key), lock.encode()));
    }

    pub fn unlock_key(&mut self, key: &[u8]) {
        self.modifies
            .push(Modify::Delete(CfName::Lock, lock_key(key)));
        self.released.push(key.to_vec());
    }

    pub fn put_value(&mut self, key: &[u8], start_ts: u64, value: Vec<u8>) {
        self.modifies.push(Modify::Put(
            CfName::Default,
            versioned_key(key, start_ts),
            value,
        ));
    }

    pub fn delete_value(&mut self, key: &[u8], start_ts: u64) {
        self.modifies.push(Modify::Delete(
            CfName::Default,
            versioned_key(key, start_ts),
        ));
    }

    pub fn put_write(&mut self, key: &[u8], commit_ts: u64, write: &Write) {
        self.modifies.push(Modify::Put(
            CfName::Write,
            versioned_key(key, commit_ts),
            write.encode(),
        ));
    }

    pub fn delete_write(&mut self, key: &[u8], commit_ts: u64) {
        self.modifies
            .push(Modify::Delete(CfName::Write, versioned_key(key, commit_ts)));
    }

    pub fn add_guard(&mut self, guard: MemLockGuard) {
        self.guards.push(guard);
    }

    /// Drops every collected change (a failed command writes nothing).
    pub fn clear(&mut self) {
        self.modifies.clear();
        self.released.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.modifies.is_empty()
    }

    pub fn modifies(&self) -> &[Modify] {
        &self.modifies
    }

    pub fn into_parts(self) -> (Vec<Modify>, Vec<Vec<u8>>, Vec<MemLockGuard>) {
        (self.modifies, self.released, self.guards)
    }
}
