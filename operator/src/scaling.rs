//! How many continuous workers run, as a pure function:
//! (spec, previous status, worker pods, their reported lag, now) -> [`Scale`].
//!
//! Two policies decide it besides `spec.replicas`: autoscaling on the lag the workers report
//! (`spec.autoscaling`), and the restart limit (`spec.maxRestarts`), which stops the workers of
//! an ingestion whose workers keep crashing. The reconcile builds the workload from the spec as
//! [`Scale::apply`] rewrites it, so the rest of the operator only ever sees `spec.replicas`.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tributary_crds::conditions::{reasons, types};
use tributary_crds::{
    Autoscaling, AutoscalingStatus, AutoscalingTarget, StreamingIngestion,
    StreamingIngestionStatus, TriggerKind,
};

use crate::status::pods::last_exit;
use crate::status::workers;

/// Longest wait between two increases: new workers need a rebalance and a batch before their
/// lag is reported, and the lag seen meanwhile would ask for the same workers again. The wait
/// ends sooner once every worker has reported after the change (see [`Observed::reported`]).
pub const SCALE_UP_COOLDOWN: SignedDuration = SignedDuration::from_secs(60);

/// Workers are removed only down to a count that keeps each at this share of the target, so a
/// lag hovering at the target does not add and remove a worker in turn.
const SCALE_DOWN_HEADROOM: f64 = 0.8;

/// What the reconcile runs.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Scale {
    /// The number of workers to run, when a policy decides it (None: spec.replicas as written).
    pub replicas: Option<i32>,
    /// Autoscaling's decision, for the status.
    pub autoscaling: Option<AutoscalingStatus>,
    /// Set when the restart limit stopped the workers: why, for the status.
    pub restart_limit: Option<String>,
}

impl Scale {
    /// The ingestion with `spec.replicas` set to what the policies decided, for building the
    /// workload and judging its rollout. Autoscaling is removed from that copy: its bounds are
    /// applied already.
    pub fn apply(&self, ingestion: &StreamingIngestion) -> StreamingIngestion {
        let mut effective = ingestion.clone();
        if let Some(replicas) = self.replicas {
            effective.spec.replicas = Some(replicas);
            effective.spec.autoscaling = None;
        }
        effective
    }
}

/// Decides the number of workers of a continuous ingestion; runs to completion are left alone.
pub fn decide(ingestion: &StreamingIngestion, pods: &[Pod], now: Timestamp) -> Scale {
    let spec = &ingestion.spec;
    let continuous = spec
        .trigger_kind()
        .is_ok_and(|trigger: TriggerKind| !trigger.runs_to_completion());
    if !continuous || spec.suspended() {
        return Scale::default();
    }
    let previous = ingestion.status.clone().unwrap_or_default();
    let autoscaling = spec.autoscaling.as_ref().map(|policy| {
        let observed = Observed {
            lag: workers::totals(&previous.workers, pods).lag,
            rate_per_worker: rate_per_worker(&previous, pods),
            partitions: known_partitions(&previous, pods),
            reported: workers::live_entries(&previous.workers, pods)
                .filter_map(|w| w.timestamp.as_deref()?.parse().ok())
                .collect(),
        };
        autoscale_observed(policy, previous.autoscaling.as_ref(), &observed, now)
    });
    let restart_limit = spec
        .max_restarts
        .and_then(|limit| restart_limit(ingestion, &previous, pods, limit));
    let replicas = if restart_limit.is_some() {
        Some(0)
    } else {
        autoscaling.as_ref().map(|a| a.desired_replicas)
    };
    Scale {
        replicas,
        autoscaling,
        restart_limit,
    }
}

/// The partitions being read, as far as the workers told: the union of the live workers'
/// assignments, or the partitions of the last batch if that is more (one worker reads all).
pub fn known_partitions(status: &StreamingIngestionStatus, pods: &[Pod]) -> Option<usize> {
    let assigned: std::collections::BTreeSet<&str> = workers::live_entries(&status.workers, pods)
        .flat_map(|w| w.partitions.iter().map(String::as_str))
        .collect();
    let last_batch: usize = status
        .last_progress
        .iter()
        .flat_map(|p| &p.sources)
        .map(|s| s.latest_offset.values().map(|p| p.len()).sum::<usize>())
        .sum();
    let count = assigned.len().max(last_batch);
    (count > 0).then_some(count)
}

/// The rows per second one worker processes, as the live workers report it (their mean, over
/// those that reported a rate), rounded to two significant digits so that the decision's
/// message does not change with every batch.
pub fn rate_per_worker(status: &StreamingIngestionStatus, pods: &[Pod]) -> Option<f64> {
    let rates: Vec<f64> = workers::live_entries(&status.workers, pods)
        .filter_map(|w| w.processed_rows_per_second)
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    if rates.is_empty() {
        return None;
    }
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let scale = 10f64.powi(mean.log10().floor() as i32 - 1);
    Some((mean / scale).round() * scale)
}

/// What the live workers report, as autoscaling reads it.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Offsets behind the latest, summed over the workers (None before any reported).
    pub lag: Option<i64>,
    /// See [`rate_per_worker`].
    pub rate_per_worker: Option<f64>,
    /// See [`known_partitions`].
    pub partitions: Option<usize>,
    /// When each live worker last reported. Once as many workers as were asked for have
    /// reported since the last change, their lag is the one after it: a further increase need
    /// not wait out the rest of [`SCALE_UP_COOLDOWN`]. That matters when the partitions known
    /// at the change capped it (a worker had not reported all of its partitions yet).
    pub reported: Vec<Timestamp>,
}

/// [`autoscale_observed`] for a lag target, which needs no rate, with no report times.
pub fn autoscale(
    policy: &Autoscaling,
    previous: Option<&AutoscalingStatus>,
    lag: Option<i64>,
    partitions: Option<usize>,
    now: Timestamp,
) -> AutoscalingStatus {
    let observed = Observed {
        lag,
        partitions,
        ..Observed::default()
    };
    autoscale_observed(policy, previous, &observed, now)
}

/// Autoscaling's decision: up at once (once the last change settled), down only after the lag
/// has stayed low for the delay, never outside the bounds and never above the partitions. A
/// target in seconds behind is a lag target of that many seconds at the rate per worker.
pub fn autoscale_observed(
    policy: &Autoscaling,
    previous: Option<&AutoscalingStatus>,
    observed: &Observed,
    now: Timestamp,
) -> AutoscalingStatus {
    let Observed {
        lag,
        rate_per_worker,
        partitions,
        ..
    } = *observed;
    let ceiling = match partitions {
        Some(p) => policy
            .max_replicas
            .min(i32::try_from(p).unwrap_or(i32::MAX)),
        None => policy.max_replicas,
    }
    .max(1);
    let floor = policy.min_replicas().clamp(1, ceiling);
    let bounded =
        |n: i64| i32::try_from(n.clamp(i64::from(floor), i64::from(ceiling))).unwrap_or(floor);
    let current = previous.map_or(floor, |p| p.desired_replicas.clamp(floor, ceiling));
    let last_scale_time = previous.and_then(|p| p.last_scale_time.clone());
    let bounds = match partitions {
        Some(p) if (p as i64) < i64::from(policy.max_replicas) => {
            format!("bounds {floor}..{ceiling}, at most one worker per partition ({p})")
        }
        _ => format!("bounds {floor}..{ceiling}"),
    };
    let hold = |message: String, low_lag_since: Option<String>| AutoscalingStatus {
        desired_replicas: current,
        message: Some(message),
        last_scale_time: last_scale_time.clone(),
        low_lag_since,
    };
    let scale_to = |replicas: i32, message: String| AutoscalingStatus {
        desired_replicas: replicas,
        message: Some(message),
        last_scale_time: Some(rfc3339(now)),
        low_lag_since: None,
    };

    let Some(lag) = lag else {
        return hold(
            format!("{current} workers ({bounds}); waiting for the workers to report their lag"),
            None,
        );
    };
    let (target, target_text) = match policy.target() {
        Ok(AutoscalingTarget::LagPerWorker(target)) => {
            (target.max(1), format!("a target of {target} per worker"))
        }
        Ok(AutoscalingTarget::SecondsBehind(seconds)) => match rate_per_worker {
            Some(rate) => {
                let target = ((rate * seconds as f64).round() as i64).max(1);
                (
                    target,
                    format!(
                        "a target of {seconds}s behind at {rate} rows/s per worker ({target} per worker)"
                    ),
                )
            }
            None => {
                return hold(
                    format!(
                        "{current} workers ({bounds}); waiting for the workers to report their processing rate (targetSecondsBehind)"
                    ),
                    None,
                );
            }
        },
        Err(message) => return hold(format!("{current} workers: {message}"), None),
    };
    let wanted = bounded(ceil_div(lag, target));
    let situation = format!(
        "lag {lag} with {target_text} asks for {} ({bounds})",
        ceil_div(lag, target)
    );

    if wanted > current {
        let cooling = last_scale_time
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .is_some_and(|changed| {
                // The change is stored to the second: a report counts from the next one.
                let after = changed + SignedDuration::from_secs(1);
                let reported_since = observed.reported.iter().filter(|r| **r >= after).count();
                now.duration_since(changed) < SCALE_UP_COOLDOWN
                    && reported_since < usize::try_from(current).unwrap_or(usize::MAX)
            });
        if cooling {
            return hold(
                format!("{current} workers: {situation}; waiting for the last change to settle"),
                None,
            );
        }
        return scale_to(
            wanted,
            format!("{current} -> {wanted} workers: {situation}"),
        );
    }

    // Down only as far as keeps each worker within the headroom of its target.
    let relaxed = (target as f64 * SCALE_DOWN_HEADROOM).max(1.0);
    let fewer = bounded((lag as f64 / relaxed).ceil() as i64);
    if fewer >= current {
        return hold(format!("{current} workers: {situation}"), None);
    }
    let since = previous
        .and_then(|p| p.low_lag_since.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok())
        .unwrap_or(now);
    let delay = SignedDuration::try_from(policy.scale_down_delay()).unwrap_or(SignedDuration::MAX);
    let waited = now.duration_since(since);
    if waited >= delay {
        return scale_to(
            fewer,
            format!(
                "{current} -> {fewer} workers: {situation}; low for {}s",
                waited.as_secs()
            ),
        );
    }
    // The message names the moment, not the time left: the status must not change on every
    // visit while nothing else does.
    let due = since.checked_add(delay).unwrap_or(since);
    hold(
        format!(
            "{current} workers: {situation}; {fewer} will do if the lag stays low until {}",
            rfc3339(due)
        ),
        Some(rfc3339(since)),
    )
}

/// Whether a worker restarted `limit` times, or the limit stopped the workers already at this
/// generation (their pods are gone then, so the condition remembers it): the reason, in words.
pub fn restart_limit(
    ingestion: &StreamingIngestion,
    previous: &StreamingIngestionStatus,
    pods: &[Pod],
    limit: i32,
) -> Option<String> {
    let stopped_earlier = previous.conditions.iter().find(|c| {
        c.type_ == types::DEGRADED
            && c.reason == reasons::RESTART_LIMIT_REACHED
            && c.observed_generation.is_some()
            && c.observed_generation == ingestion.metadata.generation
    });
    if let Some(condition) = stopped_earlier {
        return Some(condition.message.clone());
    }
    pods.iter()
        .flat_map(|pod| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            pod.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .map(move |c| (name.clone(), c))
        })
        .filter(|(_, container)| container.restart_count >= limit)
        .max_by_key(|(_, container)| container.restart_count)
        .map(|(pod, container)| {
            let last = last_exit(container)
                .map(|exit| format!("; last {exit}"))
                .unwrap_or_default();
            format!(
                "worker {pod} restarted {} times (spec.maxRestarts {limit}){last}. The workers are stopped; change the spec (fix the cause, or raise spec.maxRestarts) to start them again",
                container.restart_count
            )
        })
}

fn ceil_div(value: i64, divisor: i64) -> i64 {
    if value <= 0 {
        return 0;
    }
    value.saturating_add(divisor - 1) / divisor
}

fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

#[cfg(test)]
mod tests;
