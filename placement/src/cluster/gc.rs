//! GC safe point and per-service safe points.
//!
//! The GC safe point only moves forward. Services (TiDB's GC worker, CDC, BR,
//! ...) register their own safe point with a TTL; GC must not pass the
//! minimum of the live ones. Semantics follow PD: an update below the current
//! minimum is ignored, a TTL <= 0 removes the service, and an empty set is
//! seeded with `gc_worker` at 0 with infinite TTL.

use std::collections::BTreeMap;

use super::error::{PdError, PdResult};
use super::Cluster;
use crate::meta::schema::{self, ServiceSafePoint, GC_SAFE_POINT};
use crate::meta::MetaOp;

pub const GC_WORKER_SERVICE: &[u8] = b"gc_worker";

#[derive(Debug, Default)]
pub struct GcSafePoints {
    pub gc_safe_point: u64,
    services: BTreeMap<Vec<u8>, ServiceSafePoint>,
}

/// What a service update decided: the records to write and the resulting
/// minimum to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUpdate {
    pub upsert: Vec<ServiceSafePoint>,
    pub remove: Vec<Vec<u8>>,
    pub min: ServiceSafePoint,
}

impl GcSafePoints {
    pub fn new(gc_safe_point: u64, services: Vec<ServiceSafePoint>) -> Self {
        GcSafePoints {
            gc_safe_point,
            services: services
                .into_iter()
                .map(|s| (s.service_id.clone(), s))
                .collect(),
        }
    }

    pub fn services(&self) -> impl Iterator<Item = &ServiceSafePoint> {
        self.services.values()
    }

    /// Decides a service safe point update at `now` (unix seconds).
    pub fn plan_service_update(
        &self,
        service_id: &[u8],
        ttl: i64,
        safe_point: u64,
        now: i64,
    ) -> PdResult<ServiceUpdate> {
        if service_id.is_empty() {
            return Err(PdError::InvalidValue("empty service id".into()));
        }
        if service_id == GC_WORKER_SERVICE && ttl != i64::MAX {
            return Err(PdError::InvalidValue(
                "TTL of gc_worker's service safe point must be infinity".into(),
            ));
        }
        let mut live: BTreeMap<Vec<u8>, ServiceSafePoint> = BTreeMap::new();
        let mut remove = Vec::new();
        for (id, ssp) in &self.services {
            if ssp.expire_at < now {
                remove.push(id.clone());
            } else {
                live.insert(id.clone(), ssp.clone());
            }
        }
        let mut upsert = Vec::new();
        if live.is_empty() {
            let seed = ServiceSafePoint {
                service_id: GC_WORKER_SERVICE.to_vec(),
                safe_point: 0,
                expire_at: i64::MAX,
            };
            live.insert(seed.service_id.clone(), seed.clone());
            upsert.push(seed);
        }
        let min_before = min_of(&live).map(|m| m.safe_point).unwrap_or(0);
        if ttl <= 0 {
            if live.remove(service_id).is_some() {
                remove.push(service_id.to_vec());
            }
            upsert.retain(|s| s.service_id != service_id);
        } else if safe_point >= min_before {
            let expire_at = if i64::MAX - now <= ttl {
                i64::MAX
            } else {
                now + ttl
            };
            let ssp = ServiceSafePoint {
                service_id: service_id.to_vec(),
                safe_point,
                expire_at,
            };
            upsert.retain(|s| s.service_id != service_id);
            upsert.push(ssp.clone());
            live.insert(ssp.service_id.clone(), ssp);
        }
        let min = min_of(&live).cloned().unwrap_or(ServiceSafePoint {
            service_id: Vec::new(),
            safe_point: 0,
            expire_at: now,
        });
        Ok(ServiceUpdate {
            upsert,
            remove,
            min,
        })
    }

    pub fn apply_service_update(&mut self, update: &ServiceUpdate) {
        for id in &update.remove {
            self.services.remove(id);
        }
        for ssp in &update.upsert {
            self.services.insert(ssp.service_id.clone(), ssp.clone());
        }
    }
}

fn min_of(services: &BTreeMap<Vec<u8>, ServiceSafePoint>) -> Option<&ServiceSafePoint> {
    services.values().min_by_key(|s| s.safe_point)
}

/// The minimum service safe point as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinServiceSafePoint {
    pub service_id: Vec<u8>,
    /// Seconds until it expires.
    pub ttl: i64,
    pub safe_point: u64,
}

impl Cluster {
    pub fn gc_safe_point(&self) -> PdResult<u64> {
        Ok(self.bootstrapped_state()?.gc.gc_safe_point)
    }

    /// Moves the GC safe point forward; returns the resulting safe point
    /// (the old one when `safe_point` is not newer).
    pub async fn update_gc_safe_point(&self, safe_point: u64) -> PdResult<u64> {
        self.ensure_bootstrapped()?;
        let _writer = self.writer.lock().await;
        let current = self.state.read().gc.gc_safe_point;
        if safe_point <= current {
            if safe_point < current {
                tracing::info!(
                    current,
                    requested = safe_point,
                    "ignored GC safe point moving backwards"
                );
            }
            return Ok(current);
        }
        self.meta
            .write(vec![schema::put_u64(GC_SAFE_POINT, safe_point)])
            .await?;
        self.state.write().gc.gc_safe_point = safe_point;
        Ok(safe_point)
    }

    pub async fn update_service_gc_safe_point(
        &self,
        service_id: &[u8],
        ttl: i64,
        safe_point: u64,
    ) -> PdResult<MinServiceSafePoint> {
        self.ensure_bootstrapped()?;
        let now = self.clock.now_secs();
        let _writer = self.writer.lock().await;
        let update = self
            .state
            .read()
            .gc
            .plan_service_update(service_id, ttl, safe_point, now)?;
        let mut ops: Vec<MetaOp> = update
            .remove
            .iter()
            .map(|id| schema::delete_service_safe_point(id))
            .collect();
        for ssp in &update.upsert {
            ops.push(schema::put_service_safe_point(ssp)?);
        }
        if !ops.is_empty() {
            self.meta.write(ops).await?;
        }
        self.state.write().gc.apply_service_update(&update);
        Ok(MinServiceSafePoint {
            ttl: update.min.expire_at.saturating_sub(now),
            service_id: update.min.service_id,
            safe_point: update.min.safe_point,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn run(gc: &mut GcSafePoints, id: &str, ttl: i64, sp: u64, now: i64) -> ServiceUpdate {
        let update = gc.plan_service_update(id.as_bytes(), ttl, sp, now).unwrap();
        gc.apply_service_update(&update);
        update
    }

    #[test]
    fn first_update_seeds_gc_worker() {
        let mut gc = GcSafePoints::default();
        let update = run(&mut gc, "cdc", 100, 50, 1000);
        // 50 >= gc_worker's 0, so cdc is registered; min is still gc_worker.
        assert_eq!(update.min.service_id, GC_WORKER_SERVICE);
        assert_eq!(update.min.safe_point, 0);
        assert_eq!(gc.services().count(), 2);
    }

    #[test]
    fn min_tracks_services_and_rejects_going_below_it() {
        let mut gc = GcSafePoints::default();
        run(&mut gc, "gc_worker", i64::MAX, 100, 1000);
        run(&mut gc, "br", 60, 150, 1000);
        let update = run(&mut gc, "gc_worker", i64::MAX, 200, 1000);
        assert_eq!(update.min.service_id, b"br");
        assert_eq!(update.min.safe_point, 150);
        // A new service below the minimum is not registered.
        let update = run(&mut gc, "late", 60, 10, 1000);
        assert!(update.upsert.is_empty());
        assert_eq!(update.min.safe_point, 150);
        assert!(gc.services().all(|s| s.service_id != b"late"));
    }

    #[test]
    fn expired_and_removed_services_stop_holding_gc() {
        let mut gc = GcSafePoints::default();
        run(&mut gc, "gc_worker", i64::MAX, 300, 1000);
        run(&mut gc, "br", 10, 300, 1000);
        run(&mut gc, "cdc", 1000, 400, 1000);
        // br expires at 1010.
        let update = run(&mut gc, "gc_worker", i64::MAX, 350, 1011);
        assert!(update.remove.contains(&b"br".to_vec()));
        assert_eq!(update.min.service_id, b"gc_worker");
        assert_eq!(update.min.safe_point, 350);
        // ttl <= 0 removes.
        let update = run(&mut gc, "cdc", 0, 0, 1012);
        assert!(update.remove.contains(&b"cdc".to_vec()));
        assert_eq!(gc.services().count(), 1);
    }

    #[test]
    fn ttl_saturates_and_gc_worker_needs_infinite_ttl() {
        let mut gc = GcSafePoints::default();
        let update = run(&mut gc, "svc", i64::MAX - 5, 1, 1000);
        assert!(update.upsert.iter().any(|s| s.expire_at == i64::MAX));
        assert!(gc
            .plan_service_update(GC_WORKER_SERVICE, 100, 1, 1000)
            .is_err());
        assert!(gc.plan_service_update(b"", 100, 1, 1000).is_err());
    }
}
