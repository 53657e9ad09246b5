//! The currency every stage trades in: a topic partition, offsets per partition, and where a
//! partition starts reading. A leaf: it uses nothing else of the crate.

use std::collections::BTreeMap;
use std::fmt;

use tributary_crds::PartitionOffsets;

/// A topic and partition. Ordered by topic, then partition, so maps of them list a topic's
/// partitions together and in order (as progress records and logs show them).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// `topic-partition`, as Kafka tools and the status's `workers[].partitions` write it.
impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// An offset per partition: starting offsets, targets, the latest offsets, a batch's end.
pub type OffsetMap = BTreeMap<TopicPartition, i64>;

/// Where a partition reads next: the offset, and the table's txn version it came from (None
/// when the table has never written this partition for this query).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionStart {
    pub offset: i64,
    pub table_version: Option<i64>,
}

/// Where each owned partition reads next.
pub type StartMap = BTreeMap<TopicPartition, PartitionStart>;

/// Offsets in the shape of Spark's progress records and the checkpoint's files:
/// topic -> partition (as text) -> offset.
pub fn to_partition_offsets(offsets: &OffsetMap) -> PartitionOffsets {
    let mut out = PartitionOffsets::new();
    for (tp, offset) in offsets {
        out.entry(tp.topic.clone())
            .or_default()
            .insert(tp.partition.to_string(), *offset);
    }
    out
}

/// The inverse of [`to_partition_offsets`]; a partition key that is not a number is skipped.
pub fn from_partition_offsets(offsets: &PartitionOffsets) -> OffsetMap {
    let mut out = OffsetMap::new();
    for (topic, partitions) in offsets {
        for (partition, offset) in partitions {
            if let Ok(p) = partition.parse::<i32>() {
                out.insert(TopicPartition::new(topic.clone(), p), *offset);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_through_the_progress_shape_in_partition_order() {
        let offsets = OffsetMap::from([
            (TopicPartition::new("b", 0), 7),
            (TopicPartition::new("a", 10), 3),
            (TopicPartition::new("a", 2), 5),
        ]);
        let shaped = to_partition_offsets(&offsets);
        assert_eq!(shaped["a"]["2"], 5);
        assert_eq!(shaped["a"]["10"], 3);
        assert_eq!(shaped["b"]["0"], 7);
        assert_eq!(from_partition_offsets(&shaped), offsets);
        // Numeric order within a topic, not text order.
        let order: Vec<String> = offsets.keys().map(ToString::to_string).collect();
        assert_eq!(order, ["a-2", "a-10", "b-0"]);
    }

    #[test]
    fn a_partition_key_that_is_not_a_number_is_skipped() {
        let mut shaped = PartitionOffsets::new();
        shaped.entry("t".into()).or_default().insert("x".into(), 1);
        shaped.entry("t".into()).or_default().insert("3".into(), 4);
        assert_eq!(
            from_partition_offsets(&shaped),
            OffsetMap::from([(TopicPartition::new("t", 3), 4)])
        );
    }
}
