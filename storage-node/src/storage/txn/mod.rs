//! Transactional commands, one file per family. Each adds `Storage` methods;
//! the per-key Percolator logic they share lives in [`actions`].

mod actions;
mod commit;
mod debug;
mod gc;
mod pessimistic;
mod prewrite;
mod read;
mod resolve;
mod status;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_edge;
#[cfg(test)]
mod tests_more;

pub use gc::GcStats;

/// Keys sorted and de-duplicated, so a command handles each key once.
fn sorted_unique(mut keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    keys.sort();
    keys.dedup();
    keys
}
