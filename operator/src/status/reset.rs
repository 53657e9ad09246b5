//! `status.reset`: the offset reset of `spec.reset`, followed from Requested (the spec asks for
//! it) to Applied (a worker reports that the table records it). The workers apply it; the
//! operator only says where it stands.

use tributary_crds::{OffsetReset, ResetStatus, WorkerStatus, reset_states};

/// Where spec.reset stands, from the previous status and the workers' entries. Without a
/// spec.reset the last one stays on record.
pub fn follow(
    spec: Option<&OffsetReset>,
    previous: Option<&ResetStatus>,
    workers: &[WorkerStatus],
    now: &str,
) -> Option<ResetStatus> {
    let Some(reset) = spec else {
        return previous.cloned();
    };
    let same = previous.filter(|p| p.id == reset.id);
    if let Some(applied) = same.filter(|p| p.state == reset_states::APPLIED) {
        return Some(applied.clone());
    }
    let requested_at = same
        .and_then(|p| p.requested_at.clone())
        .or_else(|| Some(now.to_string()));
    // Any entry counts, a finished run's too: the table's record does not go away with the pod.
    // The worker that made the commit also knows its version.
    let reported = workers
        .iter()
        .filter_map(|w| w.reset.as_ref())
        .filter(|r| r.id == reset.id)
        .max_by_key(|r| r.delta_version.is_some());
    Some(match reported {
        Some(applied) => ResetStatus {
            id: reset.id.clone(),
            state: reset_states::APPLIED.to_string(),
            to: Some(reset.describe_target()),
            requested_at,
            applied_at: Some(applied.applied_at.clone()),
            delta_version: applied.delta_version,
        },
        None => ResetStatus {
            id: reset.id.clone(),
            state: reset_states::REQUESTED.to_string(),
            to: Some(reset.describe_target()),
            requested_at,
            applied_at: None,
            delta_version: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_crds::AppliedReset;

    fn reset(id: &str) -> OffsetReset {
        OffsetReset {
            id: id.into(),
            timestamp: Some("2026-11-30T12:00:00Z".into()),
            offsets: None,
        }
    }

    fn worker(name: &str, id: &str, version: Option<i64>) -> WorkerStatus {
        WorkerStatus {
            name: name.into(),
            reset: Some(AppliedReset {
                id: id.into(),
                applied_at: "2026-11-30T12:05:00+00:00".into(),
                delta_version: version,
            }),
            ..WorkerStatus::default()
        }
    }

    #[test]
    fn a_new_id_is_requested_until_a_worker_reports_it_applied() {
        let requested = follow(Some(&reset("r1")), None, &[], "T0").expect("status");
        assert_eq!(requested.state, reset_states::REQUESTED);
        assert_eq!(requested.requested_at.as_deref(), Some("T0"));
        assert_eq!(
            requested.to.as_deref(),
            Some("timestamp 2026-11-30T12:00:00Z")
        );
        // A later visit keeps the time it was first seen; an older reset's entry is no answer.
        let still = follow(
            Some(&reset("r1")),
            Some(&requested),
            &[worker("w-1", "r0", Some(3))],
            "T1",
        )
        .expect("status");
        assert_eq!(still, requested);
        let applied = follow(
            Some(&reset("r1")),
            Some(&still),
            &[worker("w-1", "r1", None), worker("w-2", "r1", Some(7))],
            "T2",
        )
        .expect("status");
        assert_eq!(applied.state, reset_states::APPLIED);
        assert_eq!(
            applied.applied_at.as_deref(),
            Some("2026-11-30T12:05:00+00:00")
        );
        assert_eq!(applied.delta_version, Some(7));
        assert_eq!(applied.requested_at.as_deref(), Some("T0"));
        // Applied stays applied, with or without the entries, and after spec.reset is removed.
        assert_eq!(
            follow(Some(&reset("r1")), Some(&applied), &[], "T3").as_ref(),
            Some(&applied)
        );
        assert_eq!(
            follow(None, Some(&applied), &[], "T3").as_ref(),
            Some(&applied)
        );
        // A new id starts over.
        let next = follow(
            Some(&reset("r2")),
            Some(&applied),
            &[worker("w-1", "r1", Some(7))],
            "T4",
        )
        .expect("status");
        assert_eq!(
            (next.id.as_str(), next.state.as_str()),
            ("r2", reset_states::REQUESTED)
        );
        assert_eq!(next.requested_at.as_deref(), Some("T4"));
    }
}
