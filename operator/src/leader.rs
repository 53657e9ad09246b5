//! Leader election through a coordination.k8s.io Lease, so two operator replicas never
//! reconcile at once: the leader renews the Lease; a standby takes it over only after it
//! expired. Losing it ends the process (the pod restarts as a standby) rather than risking
//! two writers.
//!
//! Every write of the Lease is a `replace` carrying the `resourceVersion` that was read, as
//! client-go's leader election does: of two replicas that act on the same reading (a standby
//! taking over an expired Lease while the late leader renews it), exactly one succeeds and the
//! other sees a conflict. The `kube-lease-manager` crate was weighed for this and not taken:
//! it takes over an expired Lease with a strategic-merge patch that carries no
//! `resourceVersion` (so a late renewal is overwritten and the old leader learns it lost only
//! at its next renewal, both leading meanwhile), and its watch channel keeps reporting
//! leadership while renewals fail.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// The Lease's name.
pub const LEASE_NAME: &str = "tributary-operator";
/// How long a Lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews, and a standby retries.
pub const RENEW_PERIOD: Duration = Duration::from_secs(5);
/// A leader that could not renew for this long steps down. Shorter than [`LEASE_DURATION`], so
/// it stops before a standby may take the Lease over.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// What to do with the Lease as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it.
    Take,
    /// Someone else holds it.
    Wait,
}

/// Decides from the Lease's holder, renew time and duration.
pub fn decide(lease: &Lease, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = &lease.spec else {
        return Decision::Take;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Take,
        Some(holder) if holder == me => Decision::Renew,
        Some(_) => {
            let duration = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds
                    .unwrap_or(LEASE_DURATION.as_secs() as i32),
            ));
            let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref());
            match renewed {
                Some(MicroTime(at)) if at.saturating_add(duration).unwrap_or(*at) > now => {
                    Decision::Wait
                }
                _ => Decision::Take,
            }
        }
    }
}

/// The Lease after `me` took or renewed it.
pub fn held_by(mut lease: Lease, me: &str, now: Timestamp) -> Lease {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(me) {
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.acquire_time = Some(MicroTime(now));
    }
    spec.holder_identity = Some(me.to_string());
    spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    identity: String,
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, identity: String) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            identity,
        }
    }

    fn error(source: kube::Error) -> Error {
        Error::LeaderElection {
            name: LEASE_NAME.to_string(),
            source,
        }
    }

    /// One attempt: true when we hold the Lease afterwards. A conflict (another replica wrote
    /// first) is a lost race, not an error.
    pub async fn try_acquire(&self) -> Result<bool> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(LEASE_NAME).await.map_err(Self::error)?;
        let result = match existing {
            None => {
                let lease = held_by(
                    Lease {
                        metadata: ObjectMeta {
                            name: Some(LEASE_NAME.to_string()),
                            ..ObjectMeta::default()
                        },
                        spec: None,
                    },
                    &self.identity,
                    now,
                );
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(lease) => match decide(&lease, &self.identity, now) {
                Decision::Wait => return Ok(false),
                Decision::Renew | Decision::Take => {
                    // replace carries the resourceVersion: optimistic concurrency.
                    let lease = held_by(lease, &self.identity, now);
                    self.api
                        .replace(LEASE_NAME, &PostParams::default(), &lease)
                        .await
                }
            },
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(Self::error(source)),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) -> Result<()> {
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    info!(identity = %self.identity, lease = LEASE_NAME, "leading");
                    return Ok(());
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "leader election"),
            }
            tokio::time::sleep(RENEW_PERIOD).await;
        }
    }

    /// Renews until the Lease is lost (another holder, or no successful renewal within
    /// [`RENEW_DEADLINE`]); then returns the error that ends the process.
    pub async fn keep(&self) -> Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_PERIOD).await;
            match self.try_acquire().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return Error::LeadershipLost(LEASE_NAME.to_string()),
                Err(error) => {
                    warn!(%error, "cannot renew the Lease");
                    if last_renewal.elapsed() >= RENEW_DEADLINE {
                        return Error::LeadershipLost(LEASE_NAME.to_string());
                    }
                }
            }
        }
    }

    /// Gives the Lease up on shutdown so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        if let Err(error) = self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            warn!(%error, "cannot release the Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_fresh_lease_of_another_replica_is_respected() {
        let now = Timestamp::now();
        let renewed = now - SignedDuration::from_secs(5);
        assert_eq!(decide(&lease(Some("b"), renewed), "a", now), Decision::Wait);
        assert_eq!(
            decide(&lease(Some("a"), renewed), "a", now),
            Decision::Renew
        );
    }

    #[test]
    fn an_expired_or_free_lease_is_taken() {
        let now = Timestamp::now();
        let stale = now - SignedDuration::from_secs(16);
        assert_eq!(decide(&lease(Some("b"), stale), "a", now), Decision::Take);
        assert_eq!(decide(&lease(None, now), "a", now), Decision::Take);
        assert_eq!(decide(&Lease::default(), "a", now), Decision::Take);
    }

    #[test]
    fn taking_a_lease_counts_a_transition_and_renewing_does_not() {
        let now = Timestamp::now();
        let taken = held_by(lease(Some("b"), now), "a", now);
        let spec = taken.spec.clone().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(1));
        let renewed = held_by(taken, "a", now);
        assert_eq!(renewed.spec.expect("spec").lease_transitions, Some(1));
    }
}
