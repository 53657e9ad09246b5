//! Where a partition reads next: the exactly-once core.
//!
//! **Invariant: a partition's first read after any assignment starts at the offset the table's
//! txn records; it never moves backwards.** Offsets are never left to Kafka (no auto commit, no
//! group offsets, `auto.offset.reset=error`): every way a partition comes to this worker goes
//! through [`StartResolver`] before a record is fetched:
//! - a rebalance that gives it to us, and the manual assignment of `assign` and of a run to
//!   completion: [`StartResolver::assign`], inside the callback;
//! - a batch abandoned (another writer moved the partition, a revocation, a dead-letter
//!   conflict) or an offset the broker lost: [`StartResolver::seek`].
//!
//! The table's txn for a partition is the next offset after the last committed batch, written
//! in the same Delta commit as the batch's rows, and a commit that would move it backwards or
//! from a version it did not start at is refused (`sink::delta`). So the position chosen here
//! only ever moves forward: a record is written once. Only a partition the query never wrote
//! starts at the query's starting offset; an offset retention deleted is data loss (refused,
//! or skipped forward with `failOnDataLoss: false`).

use std::sync::{Arc, Weak};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::config::METADATA_TIMEOUT;
use super::offsets::watermarks;
use crate::error::{Error, Result};
use crate::partition::{OffsetMap, PartitionStart, StartMap, TopicPartition};

/// The table's side of the invariant: the txn version (next offset) the table records for each
/// partition it has written for this query. Partitions it never wrote are absent.
pub type TableOffsets = dyn Fn(&[TopicPartition]) -> Result<OffsetMap> + Send + Sync;

/// Decides where partitions start, and puts the consumer there.
pub struct StartResolver {
    pub table_offsets: Box<TableOffsets>,
    /// A separate client for offset lookups: on the consumer's own connection a ListOffsets
    /// request waits behind the long-polling Fetch (up to fetch.wait.max.ms per partition).
    /// The [`super::Source`] owns it; the consumer's callbacks, which hold this resolver, only
    /// borrow it, so that the two clients can be closed side by side at the end of a run.
    pub offsets_client: Weak<BaseConsumer>,
    /// Starting offsets of a new query (resolved numbers, or -2 / -1 for earliest / latest).
    pub initial: OffsetMap,
    pub fail_on_data_loss: bool,
    /// The brokers, named in errors.
    pub bootstrap: String,
}

impl StartResolver {
    /// Where each partition reads next: the table's txn, else the starting offset, within the
    /// broker's watermarks.
    pub fn resolve(&self, tps: &[TopicPartition]) -> Result<StartMap> {
        let versions = (self.table_offsets)(tps)?;
        let offsets_client = self.offsets_client()?;
        let mut starts = StartMap::new();
        for tp in tps {
            let watermarks = watermarks(&offsets_client, tp, &self.bootstrap)?;
            let table_version = versions.get(tp).copied();
            let offset = start_offset(
                tp,
                table_version,
                self.initial.get(tp).copied(),
                watermarks,
                self.fail_on_data_loss,
            )?;
            starts.insert(
                tp.clone(),
                PartitionStart {
                    offset,
                    table_version,
                },
            );
        }
        Ok(starts)
    }

    /// The offsets client, while the source that owns it is open.
    fn offsets_client(&self) -> Result<Arc<BaseConsumer>> {
        self.offsets_client.upgrade().ok_or_else(|| Error::Kafka {
            action: "read the partitions' offsets (the source is closing)".into(),
            bootstrap: self.bootstrap.clone(),
            source: Box::new(rdkafka::error::KafkaError::Canceled),
        })
    }

    /// Assigns partitions (all of `tpl`, or added to the assignment when `incremental`) at
    /// their resolved start. On an error the assignment is still acknowledged, as librdkafka
    /// requires inside a rebalance, and the error returned stops the pipeline before it reads.
    pub fn assign<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &mut TopicPartitionList,
        incremental: bool,
    ) -> Result<StartMap> {
        let assign = |tpl: &TopicPartitionList| {
            if incremental {
                consumer.incremental_assign(tpl)
            } else {
                consumer.assign(tpl)
            }
        };
        let tps: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        let starts = match self.resolve(&tps) {
            Ok(starts) => starts,
            Err(error) => {
                let _ = assign(tpl);
                return Err(error);
            }
        };
        for (tp, start) in &starts {
            tpl.set_partition_offset(&tp.topic, tp.partition, Offset::Offset(start.offset))
                .map_err(Error::kafka("set a start offset", ""))?;
        }
        assign(tpl).map_err(Error::kafka("assign partitions", ""))?;
        for (tp, start) in &starts {
            tracing::info!(topic = %tp.topic, partition = tp.partition, offset = start.offset, from_table = start.table_version.is_some(), "partition assigned");
        }
        Ok(starts)
    }

    /// Seeks partitions the consumer holds to their resolved start.
    pub fn seek<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tps: &[TopicPartition],
    ) -> Result<StartMap> {
        let starts = self.resolve(tps)?;
        let mut tpl = TopicPartitionList::new();
        for (tp, start) in &starts {
            let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(start.offset));
        }
        let result = consumer
            .seek_partitions(tpl, METADATA_TIMEOUT)
            .map_err(Error::kafka("seek to the table's offsets", &self.bootstrap))?;
        for element in result.elements() {
            if let Err(error) = element.error() {
                return Err(Error::Kafka {
                    action: format!("seek {}-{}", element.topic(), element.partition()),
                    bootstrap: self.bootstrap.clone(),
                    source: Box::new(error),
                });
            }
        }
        Ok(starts)
    }
}

/// The offset a partition starts at: the table's txn version when it has one; else the query's
/// starting offset (earliest and latest are the broker's low and high watermarks). Below the low
/// watermark is data loss (an error, or skipped forward to it without `fail_on_data_loss`);
/// above the high watermark the table belongs to another incarnation of the topic (an error).
pub fn start_offset(
    tp: &TopicPartition,
    table_version: Option<i64>,
    initial: Option<i64>,
    (low, high): (i64, i64),
    fail_on_data_loss: bool,
) -> Result<i64> {
    let mut offset = match (table_version, initial) {
        (Some(version), _) => version,
        (None, Some(tributary_crds::OFFSET_LATEST)) => high,
        (None, Some(tributary_crds::OFFSET_EARLIEST)) | (None, None) => low,
        (None, Some(offset)) => offset,
    };
    if offset < low {
        if fail_on_data_loss {
            return Err(Error::DataLoss {
                topic: tp.topic.clone(),
                partition: tp.partition,
                from: offset,
                to: low,
            });
        }
        tracing::warn!(
            topic = %tp.topic,
            partition = tp.partition,
            from = offset,
            to = low,
            "offsets lost to retention are skipped (failOnDataLoss: false)"
        );
        offset = low;
    }
    if offset > high {
        return Err(Error::OffsetBeyondLatest {
            topic: tp.topic.clone(),
            partition: tp.partition,
            table_offset: offset,
            latest: high,
        });
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_crds::{OFFSET_EARLIEST, OFFSET_LATEST};

    fn tp() -> TopicPartition {
        TopicPartition::new("sensors", 3)
    }

    #[test]
    fn the_table_txn_wins_over_the_starting_offset() {
        for initial in [None, Some(OFFSET_EARLIEST), Some(OFFSET_LATEST), Some(5)] {
            assert_eq!(
                start_offset(&tp(), Some(42), initial, (10, 100), true).ok(),
                Some(42),
                "starting offset {initial:?}"
            );
        }
        // Even at the very end of the partition.
        assert_eq!(
            start_offset(&tp(), Some(100), None, (10, 100), true).ok(),
            Some(100)
        );
    }

    #[test]
    fn a_partition_the_table_never_wrote_starts_at_the_starting_offset() {
        let start = |initial| start_offset(&tp(), None, initial, (10, 100), true).ok();
        assert_eq!(start(Some(OFFSET_EARLIEST)), Some(10));
        assert_eq!(start(None), Some(10), "a partition that appeared later");
        assert_eq!(start(Some(OFFSET_LATEST)), Some(100));
        assert_eq!(start(Some(55)), Some(55));
    }

    #[test]
    fn offsets_lost_to_retention_fail_or_move_forward_never_back() {
        let lost = start_offset(&tp(), Some(4), None, (10, 100), true);
        assert!(
            matches!(
                lost,
                Err(Error::DataLoss {
                    from: 4,
                    to: 10,
                    partition: 3,
                    ..
                })
            ),
            "{lost:?}"
        );
        assert_eq!(
            start_offset(&tp(), Some(4), None, (10, 100), false).ok(),
            Some(10)
        );
        assert_eq!(
            start_offset(&tp(), None, Some(2), (10, 100), false).ok(),
            Some(10)
        );
    }

    #[test]
    fn a_table_ahead_of_the_broker_is_refused() {
        let ahead = start_offset(&tp(), Some(150), None, (10, 100), false);
        assert!(
            matches!(
                ahead,
                Err(Error::OffsetBeyondLatest {
                    table_offset: 150,
                    latest: 100,
                    ..
                })
            ),
            "{ahead:?}"
        );
    }
}
