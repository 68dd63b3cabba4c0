//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator
//! replicas can run and only one reconciles.
//!
//! A replica takes the Lease when it is free or expired, renews it well
//! within its duration, and writes with the Lease's resourceVersion so two
//! replicas can never both win (the loser gets a 409 Conflict). A leader that
//! cannot renew in time stops: the process exits and restarts as a follower.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease stays held without renewal.
    pub duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How often a follower tries to take the Lease.
    pub retry_every: Duration,
}

/// What to do with the Lease as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No Lease object yet.
    Create,
    /// Free or expired: take it over.
    Take,
    /// Ours: renew it.
    Renew,
    /// Someone else holds it.
    Held { holder: String },
}

/// Decides from the Lease as read (pure).
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> LeaseDecision {
    let Some(lease) = lease else {
        return LeaseDecision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == identity {
        return LeaseDecision::Renew;
    }
    if holder.is_empty() {
        return LeaseDecision::Take;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let expired = spec
        .renew_time
        .or(spec.acquire_time)
        .is_none_or(|renewed| renewed.0 + duration < now);
    if expired {
        LeaseDecision::Take
    } else {
        LeaseDecision::Held { holder }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp, taking: bool) -> LeaseSpec {
        let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: if taking {
                Some(MicroTime(now))
            } else {
                previous.and_then(|s| s.acquire_time.clone())
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if taking && previous.is_some() {
                transitions + 1
            } else {
                transitions
            }),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to become or stay leader. `Ok(false)`: someone else leads.
    pub async fn try_acquire(&self) -> Result<bool> {
        let now = Timestamp::now();
        let lease = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| Error::Lease(format!("reading lease: {e}")))?;
        let decision = decide(lease.as_ref(), &self.config.identity, now);
        let written = match (decision, lease) {
            (LeaseDecision::Held { .. }, _) => return Ok(false),
            (LeaseDecision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(None, now, true)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let taking = decision == LeaseDecision::Take;
                lease.spec = Some(self.spec(lease.spec.as_ref(), now, taking));
                // Replace carries the resourceVersion read above: a concurrent
                // writer makes this fail with 409 instead of both winning.
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(Error::Lease(format!("writing lease: {e}"))),
        }
    }

    /// Hands the Lease back on shutdown so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.config.identity.as_str());
        if !ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        if let Err(e) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "cannot release the leader lease");
        }
    }

    /// Waits to lead, then runs `work` while renewing. Returns when `work`
    /// ends (the Lease is released) or with an error when leadership is lost.
    pub async fn lead<F: Future<Output = ()>>(&self, metrics: &Metrics, work: F) -> Result<()> {
        loop {
            match self.try_acquire().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.config.retry_every).await;
        }
        tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became leader");
        metrics.leader.set(1);
        let result = tokio::select! {
            () = work => Ok(()),
            lost = self.keep() => Err(lost),
        };
        metrics.leader.set(0);
        if result.is_ok() {
            self.release().await;
        }
        result
    }

    /// Renews until renewal fails for longer than the Lease lasts.
    async fn keep(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_every).await;
            match self.try_acquire().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return Error::Lease("another replica took the lease".into()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the leader lease");
                    if last_renewal.elapsed() >= self.config.duration {
                        return Error::Lease(format!("lease not renewed in time: {e}"));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use http::StatusCode;
    use serde_json::json;

    use super::*;
    use crate::mock_api;

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/shale-operator";

    fn elector(client: Client) -> LeaderElector {
        LeaderElector::new(
            client,
            LeaseConfig {
                name: "shale-operator".into(),
                namespace: "ops".into(),
                identity: "pod-a".into(),
                duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(5),
                retry_every: Duration::from_secs(2),
            },
        )
    }

    fn lease_json(holder: &str, renewed: Timestamp) -> serde_json::Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "shale-operator", "namespace": "ops", "resourceVersion": "7"},
            "spec": {
                "holderIdentity": holder, "leaseDurationSeconds": 15,
                "renewTime": MicroTime(renewed), "leaseTransitions": 2
            }
        })
    }

    #[tokio::test]
    async fn creates_the_lease_when_there_is_none() {
        let (client, mut server) = mock_api::client();
        let script = tokio::spawn(async move {
            server.expect("GET", LEASE).await.not_found();
            let call = server
                .expect(
                    "POST",
                    "/apis/coordination.k8s.io/v1/namespaces/ops/leases?",
                )
                .await;
            assert_eq!(call.body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(call.body["spec"]["leaseDurationSeconds"], 15);
            call.echo();
        });
        assert!(elector(client).try_acquire().await.unwrap());
        script.await.unwrap();
    }

    #[tokio::test]
    async fn leaves_a_fresh_lease_of_another_replica_alone() {
        let (client, mut server) = mock_api::client();
        let script = tokio::spawn(async move {
            let held = lease_json("pod-b", Timestamp::now());
            server.expect("GET", LEASE).await.ok(&held);
        });
        let elector = elector(client);
        assert!(!elector.try_acquire().await.unwrap());
        drop(elector);
        script.await.unwrap();
    }

    #[tokio::test]
    async fn takes_an_expired_lease_guarded_by_its_version() {
        let (client, mut server) = mock_api::client();
        let script = tokio::spawn(async move {
            let stale = lease_json("pod-b", Timestamp::now() - SignedDuration::from_secs(60));
            server.expect("GET", LEASE).await.ok(&stale);
            let call = server.expect("PUT", &format!("{LEASE}?")).await;
            assert_eq!(call.body["metadata"]["resourceVersion"], "7");
            assert_eq!(call.body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(call.body["spec"]["leaseTransitions"], 3);
            // Another replica won the race.
            call.reply(
                StatusCode::CONFLICT,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "Conflict", "code": 409,
                        "message": "the object has been modified"}),
            );
        });
        assert!(!elector(client).try_acquire().await.unwrap());
        script.await.unwrap();
    }

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> Lease {
        let now = Timestamp::now();
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn free_expired_and_own_leases_can_be_taken() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), LeaseDecision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), 1, 15)), "a", now),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&lease(None, 1, 15)), "a", now),
            LeaseDecision::Take
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 60, 15)), "a", now),
            LeaseDecision::Take
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 1, 15)), "a", now),
            LeaseDecision::Held { holder: "b".into() }
        );
    }
}
