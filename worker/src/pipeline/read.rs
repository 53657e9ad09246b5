//! The read stage: plan a batch, fill it from the read-ahead and the consumer, and keep what
//! arrives for later batches; watch the assignment while doing so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use tracing::{info, warn};

use super::Pipeline;
use crate::batch::{
    POLL_BURST, Placement, Plan, ReadAheadState, ReadLimits, TopicNames, plan_batch,
};
use crate::error::Result;
use crate::partition::TopicPartition;
use crate::record::{Payloads, Record};
use crate::source::Polled;

/// The batch being read, while its limits let it take more.
fn open_plan<'a>(plan: &'a mut Option<(&mut Plan, &ReadLimits)>) -> Option<&'a mut Plan> {
    match plan {
        Some((plan, limits)) if !limits.full(plan) => Some(&mut **plan),
        _ => None,
    }
}

/// Offers a polled record to the batch being read; what the batch does not take (another
/// partition's, or past its planned end) comes back, copied, for the read-ahead. A record the
/// batch already holds is dropped without a copy.
fn arrive<M: Message>(
    message: &M,
    topic_names: &mut TopicNames,
    payloads: &mut Payloads,
    keep_headers: bool,
    plan: Option<&mut Plan>,
) -> Option<Record> {
    let (partition, offset) = (message.partition(), message.offset());
    let topic = topic_names.get(message.topic());
    let mut make = || Record::from_message(message, topic.clone(), payloads, keep_headers);
    match plan {
        Some(plan) => match plan.offer(&topic, partition, offset, make) {
            Placement::Taken | Placement::Duplicate => None,
            Placement::Elsewhere(record) => Some(record),
        },
        None => Some(make()),
    }
}

/// A batch read and ready to decode.
pub(super) struct ReadBatch {
    /// The partitions that read something, with where each started and stopped.
    pub plan: Plan,
    /// Shared with the threads that decode parts of a large batch.
    pub records: Arc<Vec<Record>>,
    /// Stopped at its offset cap or byte budget with more to read.
    pub full: bool,
    pub latest_offset_ms: i64,
    pub fetch_ms: i64,
}

pub(super) enum Read {
    Batch(ReadBatch),
    /// Nothing to read now.
    Idle,
    /// Given up: a stop was requested, or partitions moved meanwhile.
    Abandoned,
}

impl Pipeline {
    /// Plans and reads one batch: what the read-ahead holds first, then from the consumer,
    /// until the batch's read limits say stop.
    pub(super) fn read_batch(&mut self, started: Instant) -> Result<Read> {
        let (assigned, generation) = self.source.assigned();
        if assigned.is_empty() {
            return Ok(Read::Idle);
        }
        if self.min_offsets.is_some() {
            let available: i64 = assigned
                .iter()
                .map(|(tp, start)| self.offsets_waiting(tp, start.offset))
                .sum();
            if let Some(min_offsets) = self.min_offsets.as_mut()
                && min_offsets.put_off(available, Instant::now())
            {
                tracing::debug!(
                    available,
                    min = min_offsets.min(),
                    "batch put off: fewer offsets than minOffsetsPerTrigger"
                );
                return Ok(Read::Idle);
            }
        }
        let cap = self.schedule.offset_cap(self.max_offsets_per_trigger);
        let mut plan = plan_batch(
            &assigned,
            self.targets.as_ref(),
            cap,
            |tp| self.source.cached_high_watermark(tp),
            |topic| self.topic_names.get(topic),
        );
        let latest_offset_ms = started.elapsed().as_millis() as i64;
        if plan.is_empty() {
            return Ok(Read::Idle);
        }
        plan.reuse_records(std::mem::take(&mut self.spare_records));
        self.drain_read_ahead(&mut plan);
        let limits = ReadLimits::new(self.targets.is_none(), self.max_batch_bytes, Instant::now());
        if !self.read_into(&mut plan, &limits, generation)? {
            return Ok(Read::Abandoned);
        }
        let full = limits.full(&plan);
        // Partitions whose records did not arrive (e.g. the end of a compacted range), or that
        // the byte budget left for the next batch.
        plan.retain_read();
        if plan.is_empty() {
            return Ok(Read::Idle);
        }
        let fetch_ms = started.elapsed().as_millis() as i64 - latest_offset_ms;
        let records = Arc::new(plan.take_records());
        Ok(Read::Batch(ReadBatch {
            plan,
            records,
            full,
            latest_offset_ms,
            fetch_ms,
        }))
    }

    /// Offsets waiting in a partition read up to `position`, by the high watermark of its
    /// latest fetch (no request to the brokers per check) or the records read ahead, whichever
    /// reaches further (a partition paused with a full read-ahead fetches no new watermark); a
    /// partition not fetched yet counts none.
    pub(super) fn offsets_waiting(&self, tp: &TopicPartition, position: i64) -> i64 {
        let high = self
            .source
            .cached_high_watermark(tp)
            .max(self.read_ahead.next_offset(tp));
        high.map_or(0, |high| (high - position).max(0))
    }

    /// Moves what was read ahead into the plan, within its cap, and lets the planned
    /// partitions fetch again.
    fn drain_read_ahead(&mut self, plan: &mut Plan) {
        let (mut moved, mut taken) = (0, 0);
        let allowance = plan.allowance();
        let (partitions, records) = plan.partitions_and_records_mut();
        for planned in partitions {
            let (bytes, count) = self
                .read_ahead
                .drain_into(planned, records, allowance - taken);
            moved += bytes;
            taken += count;
            self.source.resume(&planned.tp);
        }
        plan.bytes += moved;
        plan.offsets += taken;
    }

    /// Polls records into the plan until its limits are reached. False when the batch is
    /// abandoned (stop requested, or partitions moved).
    fn read_into(&mut self, plan: &mut Plan, limits: &ReadLimits, generation: u64) -> Result<bool> {
        let mut last_progress = Instant::now();
        let mut drained = false;
        loop {
            if limits.done(plan, drained, Instant::now()) {
                return Ok(true);
            }
            if self.stopped() {
                info!("stop requested: the batch in flight is abandoned, nothing committed");
                return Ok(false);
            }
            let (got, quiet) = self.poll_burst(plan, limits);
            if quiet {
                drained = true;
            }
            if !limits.open_ended() {
                self.pass_gaps(plan, quiet);
            }
            if got {
                last_progress = Instant::now();
                drained = false;
            }
            if self.check_assignment()? {
                info!("partitions were re-read from the table: the batch is abandoned");
                return Ok(false);
            }
            if self.source.generation() != generation
                && self
                    .source
                    .lost_any(plan.partitions().iter().map(|p| &p.tp))
            {
                info!("partitions revoked while reading: the batch is abandoned");
                self.resync_plan(plan)?;
                return Ok(false);
            }
            if limits.stalled(last_progress, Instant::now()) {
                warn!("planned offsets did not all arrive in time; committing what was read");
                return Ok(true);
            }
        }
    }

    /// One burst of records into the plan (see [`Pipeline::poll_some`]). Returns (whether
    /// anything came, whether nothing came within the first wait).
    fn poll_burst(&mut self, plan: &mut Plan, limits: &ReadLimits) -> (bool, bool) {
        let came = self.poll_some(limits.first_wait(), Some((plan, limits)));
        (came > 0, came == 0)
    }

    /// Polls the consumer (rebalance callbacks run here) for `duration`, keeping any record in
    /// the read-ahead.
    pub(super) fn poll_for(&mut self, duration: Duration) -> Result<()> {
        let deadline = Instant::now() + duration;
        loop {
            self.poll_some(
                Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now())),
                None,
            );
            self.check_assignment()?;
            let source = &self.source;
            self.telemetry
                .assignment_changed(source.generation(), || source.assigned_partitions());
            // Waiting out a processingTime interval or an idle spell is a healthy turn too.
            self.telemetry.heartbeat();
            if Instant::now() >= deadline || self.stopped() {
                return Ok(());
            }
        }
    }

    /// Up to [`POLL_BURST`] records: the consumer's own queue first (its rebalances and errors
    /// are served there), then the records fetched for the owned partitions, taken in one
    /// call; only that take waits, up to `wait`, and only when nothing came. A record goes to
    /// the batch being read (`plan`) until it is full by its `limits`, else to the read-ahead:
    /// every record taken is placed, none dropped, so a partition is read without gaps.
    /// Returns how many records came.
    fn poll_some(&mut self, wait: Duration, mut plan: Option<(&mut Plan, &ReadLimits)>) -> usize {
        let mut came = 0;
        while came < POLL_BURST {
            let open = open_plan(&mut plan);
            let polled = self.source.poll(Duration::ZERO).map(|message| {
                arrive(
                    &message,
                    &mut self.topic_names,
                    &mut self.payloads,
                    self.keep_headers,
                    open,
                )
            });
            if !self.place(polled) {
                break;
            }
            came += 1;
        }
        let wait = if came == 0 { wait } else { Duration::ZERO };
        let mut fetched = std::mem::take(&mut self.fetched);
        self.source.fetch(wait, POLL_BURST - came, &mut fetched);
        for message in fetched.drain() {
            let polled = Polled::of(Some(message.into_result())).map(|message| {
                arrive(
                    &message,
                    &mut self.topic_names,
                    &mut self.payloads,
                    self.keep_headers,
                    open_plan(&mut plan),
                )
            });
            if self.place(polled) {
                came += 1;
            }
        }
        self.fetched = fetched;
        came
    }

    /// Keeps for later what a poll brought that the batch did not take, or notes what went
    /// wrong. True when a record came.
    fn place(&mut self, polled: Polled<Option<Record>>) -> bool {
        match polled {
            Polled::Message(ahead) => {
                if let Some(record) = ahead {
                    self.keep_ahead(record);
                }
                true
            }
            Polled::Nothing => false,
            Polled::OffsetsLost => {
                self.offsets_lost = true;
                false
            }
            Polled::TopicMissing => {
                self.topic_missing = true;
                false
            }
        }
    }

    /// Keeps a record that the batch being read did not take for a later batch, unless its
    /// partition is no longer ours or already past it; pauses its partition once the
    /// read-ahead holds enough of it.
    fn keep_ahead(&mut self, record: Record) {
        let tp = TopicPartition::new(&*record.topic, record.partition);
        let position = self.source.next_offset(&tp);
        if position.is_some_and(|p| record.offset >= p)
            && self.read_ahead.push(tp.clone(), record) == ReadAheadState::Full
            && self.source.pause(&tp)
        {
            // Memory stays bounded: a partition far ahead of the batch stops fetching until
            // a batch needs it again.
            tracing::debug!(topic = %tp.topic, partition = tp.partition, "read-ahead full: partition paused");
        }
    }

    /// Reports a failure from a callback, forgets read-ahead of revoked partitions, and
    /// re-resolves partitions whose offsets vanished. True when partitions were moved (a batch
    /// being read must then be abandoned).
    fn check_assignment(&mut self) -> Result<bool> {
        let (error, revoked) = self.source.take_events();
        // A deleted topic's partitions are revoked (or fail to fetch): check before going on.
        let check_topics = std::mem::take(&mut self.topic_missing) || !revoked.is_empty();
        for tp in revoked {
            // Left paused on purpose: if the partition comes back, the next batch that plans
            // it resumes it (harmless if librdkafka already did).
            self.read_ahead.forget(&tp);
        }
        if let Some(error) = error {
            return Err(error);
        }
        if check_topics {
            self.source.check_topics_exist(self.fail_on_data_loss)?;
        }
        if std::mem::take(&mut self.offsets_lost) {
            // Data loss is reported (failOnDataLoss) or skipped with a warning by the resolver.
            let assigned = self.source.assigned_partitions();
            self.resync(&assigned)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Planned partitions read past offsets that hold no record (transaction markers, aborted
    /// transactions, records removed by compaction), which would otherwise keep a batch with
    /// planned ends waiting for them until its read times out: up to the first record the
    /// read-ahead keeps of the partition, or, when it keeps none and the consumer is `quiet`,
    /// up to the consumer's position (librdkafka moves it past the markers and aborted records
    /// it does not deliver).
    fn pass_gaps(&self, plan: &mut Plan, quiet: bool) {
        let positions = if quiet { self.source.positions() } else { None };
        for planned in plan.partitions_mut() {
            if self.read_ahead.pass_gap(planned) || self.read_ahead.holds(&planned.tp) {
                continue;
            }
            if let Some(position) = positions.as_ref().and_then(|p| p.get(&planned.tp))
                && *position > planned.cursor
            {
                planned.cursor = (*position).min(planned.end);
            }
        }
    }

    /// After an abandoned batch: the batch's partitions that are still ours continue where the
    /// table says; their read-ahead is forgotten.
    pub(super) fn resync_plan(&mut self, plan: &Plan) -> Result<()> {
        let tps: Vec<TopicPartition> = plan.partitions().iter().map(|p| p.tp.clone()).collect();
        self.resync(&tps)
    }

    fn resync(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.read_ahead.forget(tp);
        }
        self.source.seek_to_table(tps)
    }
}
