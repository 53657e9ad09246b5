//! The Kafka (or Event Hubs) consumer: group membership and rebalances, the partitions this
//! worker owns, polling, pausing, and the group offsets written for lag tools.
//!
//! Every partition the consumer gets is positioned by [`super::start`] inside the rebalance
//! callback, so no message is ever fetched from a position the table did not choose.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tracing::warn;

use super::config::{SourceConfig, Subscription, librdkafka_pattern};
use super::fetch::{FetchQueue, Fetched};
use super::offsets::{cached_high_watermark, subscription_partitions};
use super::security::Security;
use super::start::StartResolver;
use crate::error::{Error, Result};
use crate::partition::{OffsetMap, PartitionStart, StartMap, TopicPartition};

/// The partitions this worker owns, as the rebalance callbacks leave them.
#[derive(Default)]
pub struct Assignment {
    pub partitions: StartMap,
    /// Bumped at every change, so a batch can tell whether its partitions moved meanwhile.
    pub generation: u64,
    /// Partitions revoked since the pipeline last looked.
    pub revoked: Vec<TopicPartition>,
    /// A failure inside a callback, reported by the pipeline.
    pub error: Option<Error>,
}

/// The consumer's context: assigns partitions where the table says.
pub struct SourceContext {
    assignment: Arc<Mutex<Assignment>>,
    resolver: StartResolver,
    security: Security,
    /// Where assigned partitions' records go (see [`super::fetch`]); set once the consumer
    /// exists, before anything is assigned.
    fetch_queue: OnceLock<Weak<FetchQueue>>,
}

impl ClientContext for SourceContext {
    /// Refused credentials and an untrusted certificate stop the pipeline (see
    /// [`super::security`] for why); librdkafka retries anything else, and so does the worker.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        match self
            .security
            .fatal_error(&error, reason, &self.resolver.bootstrap)
        {
            Some(fatal) => self.with_assignment(|a| {
                a.error.get_or_insert(fatal);
            }),
            None => {
                let reason = self.security.redact(reason);
                tracing::warn!(%error, %reason, "Kafka client error; retrying");
            }
        }
    }
}

impl SourceContext {
    fn with_assignment<T>(&self, f: impl FnOnce(&mut Assignment) -> T) -> T {
        let mut guard = match self.assignment.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Assigns partitions at the table's offsets (manual `assign`, or inside a rebalance) and
    /// records them as owned.
    fn assign(
        &self,
        consumer: &BaseConsumer<SourceContext>,
        tpl: &mut TopicPartitionList,
        incremental: bool,
    ) -> Result<()> {
        // Before the assignment, so that no record of these partitions reaches the consumer's
        // own queue first (see `super::fetch`).
        if let Some(queue) = self.fetch_queue.get().and_then(Weak::upgrade) {
            let client = consumer.client().native_ptr();
            for element in tpl.elements() {
                // SAFETY: the queue was created on this consumer's client, which is live.
                if !unsafe { queue.forward(client, element.topic(), element.partition()) } {
                    warn!(
                        topic = element.topic(),
                        partition = element.partition(),
                        "cannot take this partition's records in batches; reading them one by one"
                    );
                }
            }
        }
        let starts = self.resolver.assign(consumer, tpl, incremental)?;
        self.with_assignment(|a| {
            if !incremental {
                a.partitions.clear();
            }
            a.partitions.extend(starts);
            a.generation += 1;
        });
        Ok(())
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Err(error) = self.assign(consumer, tpl, cooperative) {
                    tracing::error!(%error, "cannot assign partitions");
                    self.with_assignment(|a| a.error = Some(error));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<TopicPartition> = tpl
                    .elements()
                    .iter()
                    .map(|e| TopicPartition::new(e.topic(), e.partition()))
                    .collect();
                for tp in &revoked {
                    tracing::info!(topic = %tp.topic, partition = tp.partition, "partition revoked");
                }
                self.with_assignment(|a| {
                    for tp in &revoked {
                        a.partitions.remove(tp);
                    }
                    if !cooperative {
                        a.partitions.clear();
                    }
                    a.revoked.extend(revoked.iter().cloned());
                    a.generation += 1;
                });
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(error) = result {
                    tracing::warn!(%error, "cannot unassign revoked partitions");
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error; dropping the assignment");
                self.with_assignment(|a| {
                    let all: Vec<TopicPartition> = a.partitions.keys().cloned().collect();
                    a.revoked.extend(all);
                    a.partitions.clear();
                    a.generation += 1;
                });
                let _ = consumer.unassign();
            }
        }
    }
}

/// What one poll brought.
pub enum Polled<M> {
    /// Nothing within the timeout, or an error librdkafka retries (logged).
    Nothing,
    /// An offset being read is no longer on the broker: every partition must be re-resolved.
    OffsetsLost,
    /// The broker does not know a topic being read: whether it was deleted is checked
    /// ([`Source::check_topics_exist`]) before the next batch.
    TopicMissing,
    Message(M),
}

impl<M> Polled<M> {
    /// The same outcome with the record turned into something else.
    pub fn map<N>(self, f: impl FnOnce(M) -> N) -> Polled<N> {
        match self {
            Polled::Nothing => Polled::Nothing,
            Polled::OffsetsLost => Polled::OffsetsLost,
            Polled::TopicMissing => Polled::TopicMissing,
            Polled::Message(message) => Polled::Message(f(message)),
        }
    }

    /// What a poll's result means for the read loop.
    pub fn of(polled: Option<KafkaResult<M>>) -> Polled<M> {
        match polled {
            None => Polled::Nothing,
            // The position is no longer on the broker (retention, or the topic was recreated):
            // reported as OffsetOutOfRange, or, with auto.offset.reset=error, AutoOffsetReset.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange
                | rdkafka::types::RDKafkaErrorCode::AutoOffsetReset,
            ))) => {
                warn!("an offset being read is no longer on the broker; re-reading where to start");
                Polled::OffsetsLost
            }
            Some(Err(
                error @ rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
                    | rdkafka::types::RDKafkaErrorCode::UnknownTopic
                    | rdkafka::types::RDKafkaErrorCode::UnknownTopicId,
                ),
            )) => {
                warn!(%error, "the broker does not know a topic being read");
                Polled::TopicMissing
            }
            Some(Err(error)) => {
                warn!(%error, "Kafka consumer error");
                Polled::Nothing
            }
            Some(Ok(message)) => Polled::Message(message),
        }
    }
}

/// The running consumer and the partitions it owns.
pub struct Source {
    config: SourceConfig,
    /// Declared before the consumer, so dropped first: a queue handle must not outlive its
    /// client.
    fetch_queue: Arc<FetchQueue>,
    consumer: BaseConsumer<SourceContext>,
    assignment: Arc<Mutex<Assignment>>,
    /// Partitions paused because the batch side holds enough of them.
    paused: BTreeSet<TopicPartition>,
    /// A static member of its group (group.instance.id): it must leave the group explicitly
    /// when it stops, or its partitions wait out its session.
    static_member: bool,
    /// The client that answers offset lookups (the resolver in the consumer's context borrows
    /// it); served every turn so its log and error events do not pile up in a long-running
    /// worker.
    offsets_client: Arc<BaseConsumer>,
}

impl Source {
    /// Creates the consumer and starts reading: subscribe, or assign at the table's offsets
    /// (the `assign` subscription, or `fixed` partitions: a run to completion reads a known set
    /// of partitions alone, so it need not join a group and wait out its rebalance delay).
    ///
    /// A group member with a `group_instance_id` is a static member (KIP-345): restarted
    /// with the same id before its session times out, it gets its partitions back without a
    /// rebalance. Manually assigned partitions have no group to be a member of.
    pub fn start(
        config: SourceConfig,
        resolver: StartResolver,
        offsets_client: Arc<BaseConsumer>,
        fixed: Option<&[TopicPartition]>,
        group_instance_id: Option<&str>,
    ) -> Result<Source> {
        let assignment = Arc::new(Mutex::new(Assignment::default()));
        let context = SourceContext {
            assignment: assignment.clone(),
            resolver,
            security: config.security.clone(),
            fetch_queue: OnceLock::new(),
        };
        let manual: Option<Vec<TopicPartition>> = match (fixed, &config.subscription) {
            (Some(fixed), _) => Some(fixed.to_vec()),
            (None, Subscription::Assign(assign)) => Some(
                assign
                    .iter()
                    .flat_map(|(topic, partitions)| {
                        partitions
                            .iter()
                            .map(|p| TopicPartition::new(topic.clone(), *p))
                    })
                    .collect(),
            ),
            (None, _) => None,
        };
        let mut client_config = config.client_config();
        // An id given in the ingestion's options wins.
        let static_member = manual.is_none()
            && (client_config.get("group.instance.id").is_some() || group_instance_id.is_some());
        if let (None, Some(id), None) = (
            &manual,
            group_instance_id,
            client_config.get("group.instance.id"),
        ) {
            client_config.set("group.instance.id", id);
            tracing::info!(
                group_instance_id = id,
                "static member of the consumer group"
            );
        }
        let consumer: BaseConsumer<SourceContext> = client_config
            .create_with_context(context)
            .map_err(|source| Error::CreateConsumer {
                bootstrap: config.bootstrap.clone(),
                source: Box::new(source),
            })?;
        // SAFETY: the consumer's client is live, and `Source` drops the queue before it.
        let fetch_queue = unsafe { FetchQueue::new(consumer.client().native_ptr()) }
            .map(Arc::new)
            .ok_or_else(|| Error::CreateConsumer {
                bootstrap: config.bootstrap.clone(),
                source: Box::new(rdkafka::error::KafkaError::ClientCreation(
                    "librdkafka could not allocate a queue".into(),
                )),
            })?;
        let _ = consumer
            .context()
            .fetch_queue
            .set(Arc::downgrade(&fetch_queue));
        if let Some(partitions) = manual {
            let mut tpl = TopicPartitionList::new();
            for tp in &partitions {
                tpl.add_partition(&tp.topic, tp.partition);
            }
            consumer.context().assign(&consumer, &mut tpl, false)?;
        } else {
            match &config.subscription {
                Subscription::Topics(topics) => {
                    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                    consumer
                        .subscribe(&topics)
                        .map_err(Error::kafka("subscribe", &config.bootstrap))?;
                }
                Subscription::Pattern(pattern) => {
                    consumer
                        .subscribe(&[&librdkafka_pattern(pattern)])
                        .map_err(Error::kafka("subscribe to a pattern", &config.bootstrap))?;
                }
                Subscription::Assign(_) => {}
            }
        }
        Ok(Source {
            config,
            fetch_queue,
            consumer,
            assignment,
            paused: BTreeSet::new(),
            static_member,
            offsets_client,
        })
    }

    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    fn with_assignment<T>(&self, f: impl FnOnce(&mut Assignment) -> T) -> T {
        let mut guard = match self.assignment.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// The owned partitions and where each reads next, with the assignment's generation.
    pub fn assigned(&self) -> (StartMap, u64) {
        self.with_assignment(|a| (a.partitions.clone(), a.generation))
    }

    pub fn assigned_partitions(&self) -> Vec<TopicPartition> {
        self.with_assignment(|a| a.partitions.keys().cloned().collect())
    }

    pub fn generation(&self) -> u64 {
        self.with_assignment(|a| a.generation)
    }

    /// Where an owned partition reads next (None when not ours).
    pub fn next_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.with_assignment(|a| a.partitions.get(tp).map(|s| s.offset))
    }

    /// Whether any of `tps` is no longer ours.
    pub fn lost_any<'a>(&self, mut tps: impl Iterator<Item = &'a TopicPartition>) -> bool {
        self.with_assignment(|a| tps.any(|tp| !a.partitions.contains_key(tp)))
    }

    /// A failure a callback left, and the partitions revoked since the last call.
    ///
    /// A consumer that hit a fatal error never reads again: for a consumer that is another
    /// worker taking over its group instance id, which fences this one out of the group.
    pub fn take_events(&self) -> (Option<Error>, Vec<TopicPartition>) {
        let (error, revoked) =
            self.with_assignment(|a| (a.error.take(), std::mem::take(&mut a.revoked)));
        (error.or_else(|| self.fatal_error()), revoked)
    }

    /// The error that ended this consumer for good, if one did.
    fn fatal_error(&self) -> Option<Error> {
        let (code, reason) = self.consumer.client().fatal_error()?;
        tracing::error!(%reason, "fatal Kafka consumer error");
        Some(Error::Kafka {
            action: "stay in the consumer group (each worker of an ingestion needs its own group instance id: a second worker started with this one's --group-instance-id fences it out)".into(),
            bootstrap: self.config.bootstrap.clone(),
            source: Box::new(rdkafka::error::KafkaError::Global(code)),
        })
    }

    /// Fails (failOnDataLoss, as Spark fails when partitions are gone) when a topic named by
    /// the subscription no longer exists on the broker: its unread offsets are lost, and a
    /// worker left running would idle forever. A pattern subscription just matches fewer
    /// topics.
    pub fn check_topics_exist(&self, fail_on_data_loss: bool) -> Result<()> {
        let topics: Vec<String> = match &self.config.subscription {
            Subscription::Topics(topics) => topics.clone(),
            Subscription::Assign(assign) => assign.keys().cloned().collect(),
            Subscription::Pattern(_) => return Ok(()),
        };
        for topic in topics {
            let named = Subscription::Topics(vec![topic.clone()]);
            match subscription_partitions(&*self.offsets_client, &named, &self.config.bootstrap) {
                Err(Error::UnknownTopic { topic, bootstrap }) => {
                    if fail_on_data_loss {
                        return Err(Error::TopicDeleted { topic, bootstrap });
                    }
                    warn!(%topic, "the topic was deleted; its unread offsets are skipped (failOnDataLoss: false)");
                }
                // Another failure to ask is not proof of deletion: the next check decides.
                Err(error) => warn!(%topic, %error, "cannot check that the topic exists"),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// One poll of the consumer's own queue: rebalance callbacks and client errors are served
    /// here; a record comes this way only for a partition that could not be forwarded to the
    /// fetch queue.
    pub fn poll(&self, timeout: Duration) -> Polled<impl rdkafka::Message + '_> {
        Polled::of(self.consumer.poll(timeout))
    }

    /// Takes up to `max` fetched records (or partitions' fetch errors) into `into`, waiting up
    /// to `wait` for the first when none is there. Returns how many came.
    pub fn fetch(&self, wait: Duration, max: usize, into: &mut Fetched) -> usize {
        self.fetch_queue.take(wait, max, into)
    }

    /// Stops fetching a partition; true when it was not paused already.
    pub fn pause(&mut self, tp: &TopicPartition) -> bool {
        if !self.paused.insert(tp.clone()) {
            return false;
        }
        self.set_paused(tp, true);
        true
    }

    /// Lets a paused partition fetch again.
    pub fn resume(&mut self, tp: &TopicPartition) {
        if self.paused.remove(tp) {
            self.set_paused(tp, false);
        }
    }

    fn set_paused(&self, tp: &TopicPartition, paused: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.topic, tp.partition);
        let result = if paused {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(error) = result {
            warn!(topic = %tp.topic, partition = tp.partition, paused, %error, "cannot pause or resume a partition");
        }
    }

    /// The consumer's fetch position of each partition.
    pub fn positions(&self) -> Option<OffsetMap> {
        let positions = self.consumer.position().ok()?;
        Some(
            positions
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(position) => {
                        Some((TopicPartition::new(e.topic(), e.partition()), position))
                    }
                    _ => None,
                })
                .collect(),
        )
    }

    /// The high watermark the last fetch response reported (see [`cached_high_watermark`]).
    pub fn cached_high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        cached_high_watermark(&self.consumer, tp)
    }

    /// A batch was handed to the committer: its partitions (those still ours) continue at
    /// `ends`, expecting the table's txns there once it lands. Should it not land, the
    /// pipeline puts them back where the table says ([`Source::seek_to_table`]).
    pub fn advance(&self, ends: &OffsetMap) {
        self.with_assignment(|a| {
            for (tp, end) in ends {
                if let Some(start) = a.partitions.get_mut(tp) {
                    *start = PartitionStart {
                        offset: *end,
                        table_version: Some(*end),
                    };
                }
            }
        });
    }

    /// A batch is in the table: its partitions (those still ours) continue at `ends`, which
    /// the table's txns now record (a partition assigned again while the batch was landing may
    /// have read the table just before), and the consumer group hears of it for lag tools.
    pub fn committed(&self, ends: &OffsetMap) {
        self.advance(ends);
        let mut offsets = TopicPartitionList::new();
        for (tp, end) in ends {
            let _ = offsets.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*end));
        }
        if let Err(error) = self.consumer.commit(&offsets, CommitMode::Async) {
            warn!(%error, "cannot commit offsets to the consumer group (only lag tools read them)");
        }
    }

    /// Puts partitions (those still ours) back where the table says they continue, resuming
    /// any that were paused.
    pub fn seek_to_table(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.resume(tp);
        }
        let still: Vec<TopicPartition> = self.with_assignment(|a| {
            tps.iter()
                .filter(|tp| a.partitions.contains_key(*tp))
                .cloned()
                .collect()
        });
        if still.is_empty() {
            return Ok(());
        }
        // A fenced consumer cannot seek: the reason it was fenced is the error to report.
        let starts = self
            .consumer
            .context()
            .resolver
            .seek(&self.consumer, &still)
            .map_err(|error| self.fatal_error().unwrap_or(error))?;
        self.with_assignment(|a| {
            for (tp, start) in starts {
                if let Some(slot) = a.partitions.get_mut(&tp) {
                    *slot = start;
                }
            }
        });
        Ok(())
    }

    /// Serves the offsets client's queued events.
    pub fn serve_offsets_client(&self) {
        if let Some(Err(error)) = self.offsets_client.poll(Duration::ZERO) {
            tracing::debug!(%error, "offsets client event");
        }
    }

    /// Drops a group consumer that the brokers refuse, without closing it. A close leaves the
    /// group and sends the last commits, and waits for them: a broker that refuses the client
    /// never answers, so the close would wait out every request timeout (socket.timeout.ms, a
    /// minute for Event Hubs) before the worker could exit with its error. The process exits
    /// next, which ends the connections; the group notices at its session timeout.
    pub fn abandon(self) {
        let Source {
            fetch_queue,
            consumer,
            ..
        } = self;
        drop(fetch_queue);
        std::mem::forget(consumer);
    }

    /// Closes the consumer at the end of a run: a close leaves the group, so the next run (or
    /// another worker) gets the partitions without waiting out the session timeout. A close
    /// waits for the brokers, though, and a broker that died after the last commit would keep
    /// a finished Job running for most of a minute; after `timeout` the close is left to
    /// finish, or not, while the process exits (nothing is committed through the consumer).
    ///
    /// A static member leaves the group first (a close does not make it leave: Kafka keeps a
    /// static member's partitions for its session, for a restart with the same id), so a
    /// worker stopped on purpose hands its partitions over at once, as a dynamic member does.
    ///
    /// The consumer and the offsets client close side by side: librdkafka takes about 100 ms
    /// to close a client that has talked to a broker (each broker thread sleeps that long on
    /// its way out), so closing them one after the other added 100 ms to every run.
    pub fn close_within(self, timeout: Duration) {
        let Source {
            fetch_queue,
            consumer,
            assignment,
            static_member,
            offsets_client,
            ..
        } = self;
        // Before the consumer goes to the closing thread: the queue handle must not outlive
        // the client. Records still fetched are dropped; nothing is committed from here on.
        drop(fetch_queue);
        let deadline = std::time::Instant::now() + timeout;
        let (closed, wait) = std::sync::mpsc::channel();
        let started = [
            close_on_thread("consumer-close", closed.clone(), move || {
                if static_member {
                    leave_group(&consumer, &assignment, timeout / 2);
                }
                drop(consumer);
            }),
            // The resolver in the consumer's context only borrows the offsets client: this is
            // its last owner, so the client closes in this thread.
            close_on_thread("offsets-close", closed, move || drop(offsets_client)),
        ]
        .into_iter()
        .filter(|started| *started)
        .count();
        for _ in 0..started {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if wait.recv_timeout(left).is_err() {
                warn!(
                    seconds = timeout.as_secs(),
                    "the Kafka clients did not close in time (are the brokers reachable?); exiting without waiting for them"
                );
                return;
            }
        }
    }
}

/// Runs `close` on a thread of its own named `name`, which says on `closed` when it is done.
/// False when the thread cannot start: the closure, and the client in it, is dropped here.
fn close_on_thread(
    name: &str,
    closed: std::sync::mpsc::Sender<()>,
    close: impl FnOnce() + Send + 'static,
) -> bool {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            close();
            let _ = closed.send(());
        })
        .is_ok()
}

/// Makes a static member leave its group: unsubscribing revokes its partitions (in the
/// rebalance callback, served by polling) and, once they are unassigned, librdkafka sends the
/// LeaveGroup that a close would skip for a static member. Waits at most `timeout`.
fn leave_group(
    consumer: &BaseConsumer<SourceContext>,
    assignment: &Mutex<Assignment>,
    timeout: Duration,
) {
    consumer.unsubscribe();
    let deadline = std::time::Instant::now() + timeout;
    let owned = || match assignment.lock() {
        Ok(guard) => !guard.partitions.is_empty(),
        Err(poisoned) => !poisoned.into_inner().partitions.is_empty(),
    };
    while owned() && std::time::Instant::now() < deadline {
        // Records still queued are dropped: nothing is committed from here on.
        let _ = consumer.poll(Duration::from_millis(50));
    }
    // The LeaveGroup request goes out once the unassignment is done, from librdkafka's own
    // thread; a last short poll gives it that moment before the close marks the client as
    // terminating (a terminating static member does not leave).
    let _ = consumer.poll(Duration::from_millis(100));
}
