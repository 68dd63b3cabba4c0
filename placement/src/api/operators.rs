//! `GET /operators`: the scheduling operators in flight (Shale's own
//! shape; PD's carries more internals). For watching scheduling work.

use axum::Json;
use serde::Serialize;

use super::format::rfc3339_ms;
use super::Leader;

#[derive(Debug, Serialize)]
pub struct OperatorJson {
    pub region_id: u64,
    pub desc: &'static str,
    pub kind: &'static str,
    pub steps: Vec<String>,
    /// Index of the step being carried out.
    pub current_step: usize,
    pub create_time: String,
}

pub async fn list(Leader(leader): Leader) -> Json<Vec<OperatorJson>> {
    Json(
        leader
            .schedule
            .operators()
            .into_iter()
            .map(|op| OperatorJson {
                region_id: op.region_id,
                desc: op.desc,
                kind: op.kind.as_str(),
                steps: op.steps.iter().map(ToString::to_string).collect(),
                current_step: op.current,
                create_time: rfc3339_ms(op.created_ms),
            })
            .collect(),
    )
}
