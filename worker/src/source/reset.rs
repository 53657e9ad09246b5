//! Where a `spec.reset` moves partitions: every partition the query reads (a time, earliest or
//! latest) or the partitions named, each as an offset checked against the broker's watermarks.
//! Moving the table's offsets there, once, is the sink's part (`sink::table`).

use std::collections::{BTreeMap, BTreeSet};

use rdkafka::consumer::BaseConsumer;
use tributary_crds::{OFFSET_EARLIEST, OFFSET_LATEST, ResetTarget, StartingOffsets};

use super::config::SourceConfig;
use super::offsets::{offsets_at_times, subscription_partitions, watermarks};
use crate::error::{Error, Result};
use crate::partition::{OffsetMap, TopicPartition};

/// The offset each partition moves to under `target`, read from the brokers now.
pub fn reset_offsets(
    client: &BaseConsumer,
    source: &SourceConfig,
    id: &str,
    target: &ResetTarget,
) -> Result<OffsetMap> {
    let read = subscription_partitions(client, &source.subscription, &source.bootstrap)?;
    let wanted = wanted_offsets(id, target, &read)?;
    let times = match target {
        ResetTarget::Timestamp(time) => {
            let at: BTreeMap<TopicPartition, i64> =
                read.iter().map(|tp| (tp.clone(), *time)).collect();
            offsets_at(client, source, id, &at)?
        }
        ResetTarget::Offsets(_) => OffsetMap::new(),
    };
    let mut offsets = OffsetMap::new();
    for (tp, wanted) in wanted {
        let bounds = watermarks(client, &tp, &source.bootstrap)?;
        // A time with no record at or after it in a partition moves that partition to its end.
        let wanted = times.get(&tp).copied().unwrap_or(wanted);
        let offset = checked_offset(id, &tp, wanted, bounds)?;
        offsets.insert(tp, offset);
    }
    Ok(offsets)
}

/// The partitions a target moves, each with its wanted offset (-2 earliest, -1 latest, or a
/// number; a time's partitions start as latest, replaced by the broker's answer). Named
/// partitions must be partitions the query reads (`read`).
pub fn wanted_offsets(
    id: &str,
    target: &ResetTarget,
    read: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let all = |offset: i64| read.iter().map(|tp| (tp.clone(), offset)).collect();
    match target {
        ResetTarget::Timestamp(_) | ResetTarget::Offsets(StartingOffsets::Latest) => {
            Ok(all(OFFSET_LATEST))
        }
        ResetTarget::Offsets(StartingOffsets::Earliest) => Ok(all(OFFSET_EARLIEST)),
        ResetTarget::Offsets(StartingOffsets::Specific(named)) => {
            let readable: BTreeSet<&TopicPartition> = read.iter().collect();
            let mut wanted = BTreeMap::new();
            let mut unknown = Vec::new();
            for (topic, partitions) in named {
                for (partition, offset) in partitions {
                    let tp = TopicPartition::new(topic.clone(), *partition);
                    if readable.contains(&tp) {
                        wanted.insert(tp, *offset);
                    } else {
                        unknown.push(tp.to_string());
                    }
                }
            }
            if !unknown.is_empty() {
                return Err(Error::Reset {
                    id: id.to_string(),
                    reason: format!(
                        "spec.reset.offsets names {}, which the query does not read (it reads {})",
                        unknown.join(", "),
                        read.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            Ok(wanted)
        }
    }
}

/// A wanted offset as a position within the partition's (low, high) watermarks: -2 is the
/// first offset kept, -1 the next to be written. An offset retention already deleted, or one
/// not yet written, is refused: the query would lose records or wait for ones that may never
/// come.
pub fn checked_offset(
    id: &str,
    tp: &TopicPartition,
    wanted: i64,
    (low, high): (i64, i64),
) -> Result<i64> {
    let refuse = |reason: String| Error::Reset {
        id: id.to_string(),
        reason,
    };
    match wanted {
        OFFSET_EARLIEST => Ok(low),
        OFFSET_LATEST => Ok(high),
        offset if offset < low => Err(refuse(format!(
            "offset {offset} of {tp} is no longer on the broker (its earliest offset is {low}: deleted by retention?); use -2 for the earliest offset kept"
        ))),
        offset if offset > high => Err(refuse(format!(
            "offset {offset} of {tp} is beyond its latest offset {high}; use -1 for the latest"
        ))),
        offset => Ok(offset),
    }
}

/// Kafka's offsetsForTimes for each partition; partitions with no record at or after their
/// time are left out (the caller moves them to their latest offset).
fn offsets_at(
    client: &BaseConsumer,
    source: &SourceConfig,
    id: &str,
    times: &BTreeMap<TopicPartition, i64>,
) -> Result<OffsetMap> {
    let what = format!("the time of spec.reset {id}");
    Ok(offsets_at_times(client, source, &what, times)?
        .into_iter()
        .filter_map(|(tp, offset)| Some((tp, offset?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read() -> Vec<TopicPartition> {
        (0..3).map(|p| TopicPartition::new("events", p)).collect()
    }

    #[test]
    fn a_time_and_earliest_or_latest_move_every_partition_read() {
        for (target, expected) in [
            (ResetTarget::Timestamp(1_700_000_000_000), OFFSET_LATEST),
            (ResetTarget::Offsets(StartingOffsets::Latest), OFFSET_LATEST),
            (
                ResetTarget::Offsets(StartingOffsets::Earliest),
                OFFSET_EARLIEST,
            ),
        ] {
            let wanted = wanted_offsets("r", &target, &read()).expect("wanted");
            assert_eq!(wanted.len(), 3, "{target:?}");
            assert!(wanted.values().all(|o| *o == expected), "{target:?}");
        }
    }

    #[test]
    fn named_partitions_move_alone_and_must_be_read_by_the_query() {
        let named = BTreeMap::from([(
            "events".to_string(),
            BTreeMap::from([(1, 40), (2, OFFSET_EARLIEST)]),
        )]);
        let target = ResetTarget::Offsets(StartingOffsets::Specific(named));
        let wanted = wanted_offsets("r", &target, &read()).expect("wanted");
        assert_eq!(
            wanted,
            BTreeMap::from([
                (TopicPartition::new("events", 1), 40),
                (TopicPartition::new("events", 2), OFFSET_EARLIEST)
            ])
        );
        let named = BTreeMap::from([
            ("events".to_string(), BTreeMap::from([(7, 0)])),
            ("other".to_string(), BTreeMap::from([(0, 0)])),
        ]);
        let target = ResetTarget::Offsets(StartingOffsets::Specific(named));
        let error = wanted_offsets("r9", &target, &read())
            .expect_err("unknown partitions")
            .to_string();
        assert!(
            error.contains("spec.reset r9 cannot be applied")
                && error.contains("names events-7, other-0, which the query does not read")
                && error.contains("it reads events-0, events-1, events-2"),
            "{error}"
        );
    }

    #[test]
    fn offsets_are_checked_against_what_the_broker_holds() {
        let tp = TopicPartition::new("events", 0);
        assert_eq!(
            checked_offset("r", &tp, OFFSET_EARLIEST, (10, 100)).ok(),
            Some(10)
        );
        assert_eq!(
            checked_offset("r", &tp, OFFSET_LATEST, (10, 100)).ok(),
            Some(100)
        );
        assert_eq!(checked_offset("r", &tp, 10, (10, 100)).ok(), Some(10));
        assert_eq!(checked_offset("r", &tp, 100, (10, 100)).ok(), Some(100));
        let below = checked_offset("r", &tp, 9, (10, 100))
            .expect_err("below")
            .to_string();
        assert!(
            below.contains(
                "offset 9 of events-0 is no longer on the broker (its earliest offset is 10"
            ),
            "{below}"
        );
        let above = checked_offset("r", &tp, 101, (10, 100))
            .expect_err("above")
            .to_string();
        assert!(
            above.contains("offset 101 of events-0 is beyond its latest offset 100"),
            "{above}"
        );
    }
}
