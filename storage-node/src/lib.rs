//! Shale's storage node: Regions over RocksDB, serving TiKV's Raw and
//! transactional APIs.

pub mod codec;
pub mod config;
pub mod engine;
pub mod keys;
pub mod pd_client;
pub mod raftstore;
pub mod region;
pub mod server;
pub mod storage;

pub use config::Config;
pub use server::{start, StorageNode};
