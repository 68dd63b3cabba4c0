//! The Shale operator: reconciles `TiKVCluster` resources into a placement
//! StatefulSet and a storage StatefulSet, and drives scale-in and rolling
//! upgrades through placement's HTTP API.
//!
//! The pipeline (`controller`) reads what exists, validates the spec, decides
//! the next step (`rollout`: `scale` and `upgrade`, pure), builds the desired
//! objects (`builders`, pure), applies them server-side, asks placement to act
//! and writes status (`status`).

pub mod builders;
pub mod controller;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod naming;
pub mod observed;
pub mod placement_api;
pub mod rollout;
pub mod scale;
pub mod status;
pub mod upgrade;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod mock_api;

pub use controller::{run, Config, Context};
pub use error::{Error, Result};
