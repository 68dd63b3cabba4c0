//! Fault injection for tests of real processes: a member can be cut off
//! from its peers' Raft traffic (both directions) while it keeps serving
//! clients, which is what a network partition looks like to it. Only
//! reachable when the server was started with fault injection allowed.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Faults {
    isolated: AtomicBool,
}

impl Faults {
    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::Relaxed)
    }

    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::Relaxed);
    }
}
