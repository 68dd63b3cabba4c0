//! Shale's placement driver: PD's role for Shale storage nodes and for
//! TiKV clients (`tikv-client`): cluster metadata replicated across the
//! placement members (behind the [`meta::MetaStore`] seam), TSO, routing,
//! and scheduling (replica repair and balancing, [`schedule`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), shale_placement::Error> {
//! let config = shale_placement::Config {
//!     listen_addr: "127.0.0.1:0".parse().unwrap(),
//!     data_dir: "/tmp/placement".into(),
//!     ..Default::default()
//! };
//! let server = shale_placement::start(config).await?;
//! println!("placement on {} (cluster {})", server.addr(), server.cluster_id());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod duration;
pub mod error;
pub mod id_alloc;
pub mod meta;
pub mod metrics;
pub mod raft;
pub mod schedule;
pub mod server;
pub mod tso;

pub use config::{Cli, Config, ConfigError};
pub use error::Error;
pub use server::{start, PlacementServer};
