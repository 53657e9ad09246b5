//! The micro-batch loop: plan offsets -> read records -> decode -> commit to Delta with the
//! partitions' txns -> commit group offsets -> report progress; by trigger, until stopped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tracing::{Instrument, info, info_span, warn};
use tributary_crds::{OnError, StartingOffsets, StreamingIngestion, TriggerKind};

use crate::checkpoint::{
    AvailableNowRun, CheckpointDir, OwnerClaim, from_partition_offsets, to_partition_offsets,
};
use crate::decode::JsonDecoder;
use crate::error::{Error, Result};
use crate::metrics::BatchMetrics;
use crate::progress::{self, BatchFacts};
use crate::secrets;
use crate::sink::{CommitOutcome, DeltaSink, TxnUpdate};
use crate::source::{
    self, Assignment, METADATA_TIMEOUT, PartitionStart, Record, SourceConfig, SourceContext,
    StartResolver, Tp,
};
use crate::telemetry::Telemetry;
use crate::trigger::{Schedule, split_limit};
use crate::{deadletter, source::subscription_partitions};

/// How long a batch waits for planned offsets that do not arrive before committing what it has.
const BATCH_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Records read ahead per partition before the partition is paused.
const CARRY_LIMIT: usize = 50_000;
/// Environment variable overriding [`CARRY_LIMIT`].
const READ_AHEAD_ENV: &str = "TRIBUTARY_READ_AHEAD_RECORDS";
/// Poll interval while idle.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub query_id: String,
    pub batches: i64,
    pub input_rows: i64,
    pub output_rows: i64,
    pub rescued_rows: i64,
    pub dead_letter_rows: i64,
    pub files: usize,
    pub delta_version: Option<i64>,
    pub table: String,
    /// False when stopped (SIGTERM) before an availableNow/once run reached its targets.
    pub completed: bool,
}

/// Runs one ingestion until its trigger says it is done, or `stop` is set.
pub fn run(
    ingestion: &StreamingIngestion,
    bootstrap_override: Option<&str>,
    stop: Arc<AtomicBool>,
    runtime: Handle,
    telemetry: Telemetry,
) -> Result<RunSummary> {
    let namespace = ingestion
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = ingestion
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "ingestion".into());
    let span = info_span!("ingestion", ingestion = %format!("{namespace}/{name}"));
    let _entered = span.enter();
    let spec = &ingestion.spec;
    let kind = spec.trigger_kind().map_err(Error::Unsupported)?;
    let source = SourceConfig::from_ingestion(ingestion, bootstrap_override)?;
    info!(bootstrap = %source.bootstrap, group = %source.group_id, options = %source.describe_options(), trigger = %Schedule::describe(kind), "starting");

    let checkpoint = CheckpointDir::open(
        &spec.checkpoint.location,
        &OwnerClaim {
            namespace: namespace.clone(),
            name: name.clone(),
        },
    )?;
    let query_id = checkpoint.metadata()?.id;
    let run_id = uuid::Uuid::new_v4().to_string();
    info!(query_id, run_id, "query identity");

    let format = &spec.format.json;
    let decoder = JsonDecoder::new(format, &spec.metadata_columns)?;
    let delta = &spec.sink.delta;
    let Some(table_uri) = delta.uri.clone() else {
        return Err(Error::Unsupported(
            "spec.sink.delta.table (Unity Catalog) is not supported by this worker yet; use spec.sink.delta.uri".into(),
        ));
    };
    let mut storage_options: HashMap<String, String> = delta
        .storage_options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (option, value) in &delta.secret_storage_options {
        let field = format!("spec.sink.delta.secretStorageOptions[{option}]");
        storage_options.insert(
            option.clone(),
            secrets::resolve(&value.secret_key_ref, &field)?
                .expose()
                .to_string(),
        );
    }
    let sink_description = format!("DeltaSink[{table_uri}]");
    let sink = runtime.block_on(DeltaSink::open_or_create(
        &table_uri,
        storage_options.clone(),
        decoder.table_schema(),
        delta.partition_by.clone(),
        delta.checkpoint_interval.unwrap_or(10),
        delta.target_file_size.map(|s| s as u64),
        &format!("Written by Tributary ingestion {namespace}/{name}"),
    ))?;
    let sink = Arc::new(Mutex::new(sink));
    let dead_letter = match (format.on_error(), &format.dead_letter) {
        (OnError::DeadLetter, Some(dead_letter)) => {
            Some(runtime.block_on(DeltaSink::open_or_create(
                &dead_letter.uri,
                storage_options.clone(),
                deadletter::schema(),
                Vec::new(),
                delta.checkpoint_interval.unwrap_or(10),
                None,
                &format!("Dead letters of Tributary ingestion {namespace}/{name}"),
            ))?)
        }
        (OnError::DeadLetter, None) => {
            return Err(Error::Unsupported(
                "onError: deadLetter needs format.json.deadLetter.uri".into(),
            ));
        }
        _ => None,
    };

    // A short-lived client for metadata: starting offsets and availableNow targets are decided
    // before the consumer joins its group.
    let metadata_client: BaseConsumer = {
        let mut config: ClientConfig = source.client_config();
        config.set("group.id", format!("{}-metadata", source.group_id));
        config.create().map_err(|e| Error::CreateConsumer {
            bootstrap: source.bootstrap.clone(),
            source: Box::new(e),
        })?
    };
    let initial = match checkpoint.initial_offsets()? {
        Some(initial) => initial,
        None => {
            let resolved = resolve_starting_offsets(&metadata_client, &source)?;
            checkpoint.save_initial_offsets(&resolved)?
        }
    };
    let targets: Option<BTreeMap<Tp, i64>> = match kind {
        TriggerKind::AvailableNow => Some(available_now_targets(
            &metadata_client,
            &source,
            &checkpoint,
            &run_id,
        )?),
        TriggerKind::Once => Some(latest_offsets(
            &metadata_client,
            &subscription_partitions(&metadata_client, &source.subscription, &source.bootstrap)?,
            &source.bootstrap,
        )?),
        _ => None,
    };
    let offsets_client = Arc::new(metadata_client);

    let app_prefix = format!("tributary-{query_id}");
    let table_versions = {
        let sink = sink.clone();
        let runtime = runtime.clone();
        let app_prefix = app_prefix.clone();
        move |tps: &[Tp]| -> Result<BTreeMap<Tp, i64>> {
            let ids: Vec<String> = tps.iter().map(|tp| app_id(&app_prefix, tp)).collect();
            let mut sink = sink
                .lock()
                .map_err(|_| Error::Runtime("sink lock poisoned".into()))?;
            let versions = runtime.block_on(sink.txn_versions(&ids))?;
            Ok(tps
                .iter()
                .zip(versions)
                .filter_map(|(tp, v)| v.map(|v| (tp.clone(), v)))
                .collect())
        }
    };
    let assignment = Arc::new(Mutex::new(Assignment::default()));
    let context = SourceContext {
        assignment: assignment.clone(),
        resolver: StartResolver {
            table_versions: Box::new(table_versions),
            offsets_client: offsets_client.clone(),
            initial,
            fail_on_data_loss: source.read.fail_on_data_loss(),
            bootstrap: source.bootstrap.clone(),
        },
    };
    let consumer = source::start_consumer(&source, context)?;

    let mut pipeline = Pipeline {
        source,
        consumer,
        offsets_client,
        assignment,
        sink,
        dead_letter,
        decoder,
        checkpoint,
        runtime,
        schedule: Schedule::new(kind),
        targets,
        carry: BTreeMap::new(),
        stop,
        telemetry,
        app_prefix,
        query_id: query_id.clone(),
        run_id,
        name: format!("{namespace}/{name}"),
        sink_description,
        max_offsets: spec
            .source
            .read_options()
            .and_then(|r| r.max_offsets_per_trigger),
        summary: RunSummary {
            query_id,
            table: table_uri,
            ..RunSummary::default()
        },
        previous_start: None,
        offsets_lost: false,
        paused: Default::default(),
        // Overridable so that tests can exercise pausing with little data.
        read_ahead_limit: std::env::var(READ_AHEAD_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|v: &usize| *v > 0)
            .unwrap_or(CARRY_LIMIT),
    };
    pipeline.run()?;
    Ok(pipeline.summary)
}

/// The txn app id of a partition: derived from the query id, so a new query (new checkpoint)
/// writing to the same table does not inherit another query's offsets.
fn app_id(prefix: &str, tp: &Tp) -> String {
    format!("{prefix}-{}-{}", tp.0, tp.1)
}

fn dead_letter_app_id(prefix: &str, tp: &Tp) -> String {
    format!("{prefix}-deadletter-{}-{}", tp.0, tp.1)
}

/// startingOffsets of a new query, as numbers where Spark would pin them (latest is read now;
/// earliest stays symbolic so that retention never turns it into data loss).
fn resolve_starting_offsets(
    client: &BaseConsumer,
    source: &SourceConfig,
) -> Result<BTreeMap<Tp, i64>> {
    let tps = subscription_partitions(client, &source.subscription, &source.bootstrap)?;
    let starting = source
        .read
        .starting_offsets()
        .map_err(|e| Error::Unsupported(format!("startingOffsets: {e}")))?;
    let mut offsets = BTreeMap::new();
    match starting {
        StartingOffsets::Earliest => {
            for tp in tps {
                offsets.insert(tp, tributary_crds::OFFSET_EARLIEST);
            }
        }
        StartingOffsets::Latest => {
            offsets = latest_offsets(client, &tps, &source.bootstrap)?;
        }
        StartingOffsets::Specific(specific) => {
            for tp in tps {
                let wanted = specific
                    .get(&tp.0)
                    .and_then(|p| p.get(&tp.1))
                    .copied()
                    .unwrap_or(tributary_crds::OFFSET_EARLIEST);
                let offset = if wanted == tributary_crds::OFFSET_LATEST {
                    latest_offsets(client, std::slice::from_ref(&tp), &source.bootstrap)?
                        .get(&tp)
                        .copied()
                        .unwrap_or(wanted)
                } else {
                    wanted
                };
                offsets.insert(tp, offset);
            }
        }
    }
    info!(offsets = ?to_partition_offsets(&offsets), "starting offsets of the new query");
    Ok(offsets)
}

/// The latest offset (high watermark) of each partition.
fn latest_offsets<C: rdkafka::consumer::ConsumerContext>(
    client: &BaseConsumer<C>,
    tps: &[Tp],
    bootstrap: &str,
) -> Result<BTreeMap<Tp, i64>> {
    tps.iter()
        .map(|tp| Ok((tp.clone(), source::watermarks(client, tp, bootstrap)?.1)))
        .collect()
}

/// The end offsets of this availableNow run: those of an unfinished earlier run (so a restarted
/// Job ends where the first attempt would have), or the latest offsets now.
fn available_now_targets(
    client: &BaseConsumer,
    source: &SourceConfig,
    checkpoint: &CheckpointDir,
    run_id: &str,
) -> Result<BTreeMap<Tp, i64>> {
    if let Some(run) = checkpoint.available_now()?
        && !run.finished
    {
        info!(planned_by = %run.run_id, targets = ?run.targets, "resuming an unfinished availableNow run");
        return Ok(from_partition_offsets(&run.targets));
    }
    let tps = subscription_partitions(client, &source.subscription, &source.bootstrap)?;
    let targets = latest_offsets(client, &tps, &source.bootstrap)?;
    checkpoint.save_available_now(&AvailableNowRun {
        run_id: run_id.to_string(),
        planned_at: chrono::Utc::now().to_rfc3339(),
        targets: to_partition_offsets(&targets),
        finished: false,
    })?;
    info!(targets = ?to_partition_offsets(&targets), "availableNow targets");
    Ok(targets)
}

/// One partition's part of a planned batch.
#[derive(Clone, Debug)]
struct PlannedPartition {
    start: PartitionStart,
    end: i64,
    latest: i64,
    /// The next offset to read, as records arrive.
    cursor: i64,
}

struct Pipeline {
    source: SourceConfig,
    consumer: BaseConsumer<SourceContext>,
    /// Latest offsets are asked on this client, not the consumer's busy connection.
    offsets_client: Arc<BaseConsumer>,
    assignment: Arc<Mutex<Assignment>>,
    sink: Arc<Mutex<DeltaSink>>,
    dead_letter: Option<DeltaSink>,
    decoder: JsonDecoder,
    checkpoint: CheckpointDir,
    runtime: Handle,
    schedule: Schedule,
    targets: Option<BTreeMap<Tp, i64>>,
    /// Records read ahead of a batch's planned end, kept for the next batch.
    carry: BTreeMap<Tp, VecDeque<Record>>,
    stop: Arc<AtomicBool>,
    app_prefix: String,
    query_id: String,
    run_id: String,
    name: String,
    sink_description: String,
    max_offsets: Option<i64>,
    summary: RunSummary,
    previous_start: Option<Instant>,
    /// Set when the broker no longer has an offset we read: every partition is re-resolved.
    offsets_lost: bool,
    /// Partitions paused because their read-ahead is full.
    paused: std::collections::BTreeSet<Tp>,
    read_ahead_limit: usize,
    /// Metrics, readiness and (in a pod) status.
    telemetry: Telemetry,
}

enum BatchResult {
    /// Nothing to read now.
    Idle,
    Committed,
    /// Abandoned without committing (revocation, conflict or stop).
    Abandoned,
}

impl Pipeline {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn with_assignment<T>(&self, f: impl FnOnce(&mut Assignment) -> T) -> T {
        let mut guard = match self.assignment.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    fn run(&mut self) -> Result<()> {
        let mut batch_id = self.checkpoint.last_batch_id()?.map_or(0, |b| b + 1);
        loop {
            self.telemetry.heartbeat();
            let wait = self.schedule.wait(Instant::now());
            self.poll_for(wait)?;
            if self.stopped() {
                info!("stopping: no batch in flight");
                return Ok(());
            }
            if self.targets_reached() {
                self.finish()?;
                return Ok(());
            }
            let started = Instant::now();
            self.schedule.batch_started(started);
            let span = info_span!("batch", batch = batch_id);
            match span.in_scope(|| self.batch(batch_id, started))? {
                BatchResult::Committed => {
                    batch_id += 1;
                    if self.schedule.kind() == TriggerKind::Once {
                        self.finish()?;
                        return Ok(());
                    }
                }
                BatchResult::Abandoned => {}
                BatchResult::Idle => {
                    if self.schedule.kind() == TriggerKind::Once && self.once_has_nothing() {
                        self.finish()?;
                        return Ok(());
                    }
                    self.poll_for(IDLE_POLL)?;
                }
            }
        }
    }

    /// Polls the consumer (rebalance callbacks run here) for `duration`, keeping any record in
    /// the carry buffer.
    fn poll_for(&mut self, duration: Duration) -> Result<()> {
        let deadline = Instant::now() + duration;
        loop {
            self.poll_once(
                Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now())),
                None,
            );
            self.check_assignment()?;
            // Waiting out a processingTime interval or an idle spell is a healthy turn too.
            self.telemetry.heartbeat();
            if Instant::now() >= deadline || self.stopped() {
                return Ok(());
            }
        }
    }

    /// Reports a failure from a callback, forgets read-ahead of revoked partitions, and
    /// re-resolves partitions whose offsets vanished. True when partitions were moved (a batch
    /// being read must then be abandoned).
    fn check_assignment(&mut self) -> Result<bool> {
        let (error, revoked) =
            self.with_assignment(|a| (a.error.take(), std::mem::take(&mut a.revoked)));
        for tp in revoked {
            // Kept in `paused` on purpose: if the partition comes back, the next batch that
            // plans it resumes it (harmless if librdkafka already did).
            self.carry.remove(&tp);
        }
        if let Some(error) = error {
            return Err(error);
        }
        if std::mem::take(&mut self.offsets_lost) {
            // Data loss is reported (failOnDataLoss) or skipped with a warning by the resolver.
            let assigned: Vec<Tp> =
                self.with_assignment(|a| a.partitions.keys().cloned().collect());
            self.resync(&assigned)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// One poll; a record goes to the batch being read (`plan`) or the carry buffer.
    fn poll_once(
        &mut self,
        timeout: Duration,
        plan: Option<&mut BTreeMap<Tp, (PlannedPartition, Vec<Record>)>>,
    ) -> bool {
        let record = match self.consumer.poll(timeout) {
            None => return false,
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange,
            ))) => {
                warn!("an offset being read is no longer on the broker; re-reading where to start");
                self.offsets_lost = true;
                return false;
            }
            Some(Err(error)) => {
                warn!(%error, "Kafka consumer error");
                return false;
            }
            Some(Ok(message)) => Record::from_message(&message),
        };
        let tp = (record.topic.clone(), record.partition);
        if let Some(plan) = plan
            && let Some((planned, records)) = plan.get_mut(&tp)
        {
            if record.offset < planned.cursor {
                return true;
            }
            if record.offset < planned.end {
                planned.cursor = record.offset + 1;
                records.push(record);
                return true;
            }
        }
        let position = self.with_assignment(|a| a.partitions.get(&tp).map(|s| s.offset));
        if position.is_some_and(|p| record.offset >= p) {
            let queue = self.carry.entry(tp.clone()).or_default();
            // Read-ahead is kept in offset order; a record older than the tail is a replay
            // after a seek and is already queued or committed.
            if queue.back().is_none_or(|last| record.offset > last.offset) {
                queue.push_back(record);
            }
            // Memory stays bounded: a partition far ahead of the batch stops fetching until
            // a batch needs it again.
            if queue.len() >= self.read_ahead_limit && self.paused.insert(tp.clone()) {
                tracing::debug!(topic = %tp.0, partition = tp.1, "read-ahead full: partition paused");
                self.set_paused(&tp, true);
            }
        }
        true
    }

    fn set_paused(&self, tp: &Tp, paused: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        let result = if paused {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(error) = result {
            warn!(topic = %tp.0, partition = tp.1, paused, %error, "cannot pause or resume a partition");
        }
    }

    /// Lets a paused partition fetch again.
    fn resume(&mut self, tp: &Tp) {
        if self.paused.remove(tp) {
            self.set_paused(tp, false);
        }
    }

    fn targets_reached(&self) -> bool {
        let Some(targets) = &self.targets else {
            return false;
        };
        if self.schedule.kind() != TriggerKind::AvailableNow {
            return false;
        }
        let assigned = self.with_assignment(|a| a.partitions.clone());
        targets.iter().all(|(tp, target)| {
            assigned
                .get(tp)
                .is_some_and(|start| start.offset >= *target)
        })
    }

    fn once_has_nothing(&self) -> bool {
        // Once: a run whose partitions are all assigned and have nothing below the targets.
        self.targets_reached_for_once()
    }

    fn targets_reached_for_once(&self) -> bool {
        let Some(targets) = &self.targets else {
            return true;
        };
        let assigned = self.with_assignment(|a| a.partitions.clone());
        targets
            .iter()
            .all(|(tp, target)| assigned.get(tp).is_some_and(|s| s.offset >= *target))
    }

    fn finish(&mut self) -> Result<()> {
        if self.schedule.kind() == TriggerKind::AvailableNow
            && let Some(mut run) = self.checkpoint.available_now()?
        {
            run.finished = true;
            self.checkpoint.save_available_now(&run)?;
        }
        self.summary.completed = true;
        info!(rows = self.summary.output_rows, "run complete");
        Ok(())
    }

    /// Plans, reads, decodes and commits one micro-batch.
    fn batch(&mut self, batch_id: i64, started: Instant) -> Result<BatchResult> {
        let (assigned, generation) = self.with_assignment(|a| (a.partitions.clone(), a.generation));
        if assigned.is_empty() {
            return Ok(BatchResult::Idle);
        }
        // Plan: the end offset of each partition.
        let mut plan: BTreeMap<Tp, (PlannedPartition, Vec<Record>)> = BTreeMap::new();
        let mut latest_all = BTreeMap::new();
        for (tp, start) in &assigned {
            let target = match &self.targets {
                Some(targets) => match targets.get(tp) {
                    Some(target) => Some(*target),
                    // A partition that appeared after an availableNow run was planned waits
                    // for the next run.
                    None => continue,
                },
                None => None,
            };
            if target.is_some_and(|t| start.offset >= t) {
                continue;
            }
            let (_, latest) = source::watermarks(&self.offsets_client, tp, &self.source.bootstrap)?;
            latest_all.insert(tp.clone(), latest);
            let end = target.map_or(latest, |t| t.min(latest));
            if end > start.offset {
                plan.insert(
                    tp.clone(),
                    (
                        PlannedPartition {
                            start: *start,
                            end,
                            latest,
                            cursor: start.offset,
                        },
                        Vec::new(),
                    ),
                );
            }
        }
        let latest_offset_ms = started.elapsed().as_millis() as i64;
        if plan.is_empty() {
            return Ok(BatchResult::Idle);
        }
        if let Some(limit) = self
            .max_offsets
            .filter(|_| self.schedule.honours_rate_limit())
        {
            let backlogs: Vec<i64> = plan.values().map(|(p, _)| p.end - p.start.offset).collect();
            let shares = split_limit(&backlogs, limit);
            for ((planned, _), share) in plan.values_mut().zip(shares) {
                planned.end = planned.start.offset + share;
            }
            plan.retain(|_, (p, _)| p.end > p.start.offset);
        }

        // Read: first what was read ahead, then from the consumer.
        for (tp, (planned, records)) in plan.iter_mut() {
            if let Some(queue) = self.carry.get_mut(tp) {
                while let Some(front) = queue.front() {
                    if front.offset < planned.cursor {
                        queue.pop_front();
                    } else if front.offset < planned.end {
                        if let Some(record) = queue.pop_front() {
                            planned.cursor = record.offset + 1;
                            records.push(record);
                        }
                    } else {
                        break;
                    }
                }
            }
        }
        let planned: Vec<Tp> = plan.keys().cloned().collect();
        for tp in &planned {
            self.resume(tp);
        }
        let mut last_progress = Instant::now();
        loop {
            if plan.values().all(|(p, _)| p.cursor >= p.end) {
                break;
            }
            if self.stopped() {
                info!("stop requested: the batch in flight is abandoned, nothing committed");
                return Ok(BatchResult::Abandoned);
            }
            if self.poll_once(Duration::from_millis(100), Some(&mut plan)) {
                last_progress = Instant::now();
            }
            if self.check_assignment()? {
                info!("partitions were re-read from the table: the batch is abandoned");
                return Ok(BatchResult::Abandoned);
            }
            if self.with_assignment(|a| a.generation) != generation {
                let still: Vec<bool> = self.with_assignment(|a| {
                    plan.keys()
                        .map(|tp| a.partitions.contains_key(tp))
                        .collect()
                });
                if still.iter().any(|s| !s) {
                    info!("partitions revoked while reading: the batch is abandoned");
                    self.resync_plan(&plan)?;
                    return Ok(BatchResult::Abandoned);
                }
            }
            if last_progress.elapsed() > BATCH_READ_TIMEOUT {
                warn!("planned offsets did not all arrive in time; committing what was read");
                break;
            }
        }
        // Partitions whose records did not arrive (e.g. the end of a compacted range).
        plan.retain(|_, (p, _)| p.cursor > p.start.offset);
        if plan.is_empty() {
            return Ok(BatchResult::Idle);
        }
        let fetch_ms = started.elapsed().as_millis() as i64 - latest_offset_ms;

        // Decode.
        let decode_started = Instant::now();
        let mut records: Vec<Record> = Vec::new();
        for (_, partition_records) in plan.values_mut() {
            records.append(partition_records);
        }
        let decoded = self.decoder.decode(&records)?;
        let decode_ms = decode_started.elapsed().as_millis() as i64;
        if self.decoder.on_error() == OnError::Fail
            && let Some(bad) = decoded.bad.first()
        {
            let record = &records[bad.index];
            return Err(Error::BadRecord {
                topic: record.topic.clone(),
                partition: record.partition,
                offset: record.offset,
                reason: bad.reason.clone(),
            });
        }

        // Commit: dead letters first (idempotent through their own txns), then the batch.
        let commit_started = Instant::now();
        let dead_letter_rows = self.write_dead_letters(&records, &decoded.bad, &plan)?;
        let txns: Vec<TxnUpdate> = plan
            .iter()
            .map(|(tp, (p, _))| TxnUpdate {
                app_id: app_id(&self.app_prefix, tp),
                expected: p.start.table_version,
                version: p.cursor,
            })
            .collect();
        // Callbacks only run inside poll, so the assignment cannot change from here to the
        // commit; a partition lost to a rebalance we have not polled yet is caught by the txn
        // check in the commit.
        let metadata = HashMap::from([
            (
                "tributary.queryId".to_string(),
                serde_json::json!(self.query_id),
            ),
            (
                "tributary.runId".to_string(),
                serde_json::json!(self.run_id),
            ),
            ("tributary.batchId".to_string(), serde_json::json!(batch_id)),
        ]);
        let outcome = {
            let mut sink = self
                .sink
                .lock()
                .map_err(|_| Error::Runtime("sink lock poisoned".into()))?;
            self.runtime.block_on(
                sink.commit(Some(&decoded.batch), &txns, metadata)
                    .instrument(info_span!("commit")),
            )?
        };
        let (version, files, commit_retries) = match outcome {
            CommitOutcome::Committed {
                version,
                files,
                retries,
            } => (version, files, retries),
            CommitOutcome::Conflict(reason) => {
                warn!(
                    reason,
                    "another writer moved these partitions: the batch is abandoned and the partitions re-read from the table"
                );
                self.resync_plan(&plan)?;
                return Ok(BatchResult::Abandoned);
            }
        };
        let commit_ms = commit_started.elapsed().as_millis() as i64;

        // The batch is in the table: advance, then tell the consumer group.
        let mut offsets = TopicPartitionList::new();
        self.with_assignment(|a| {
            for (tp, (p, _)) in &plan {
                if let Some(start) = a.partitions.get_mut(tp) {
                    *start = PartitionStart {
                        offset: p.cursor,
                        table_version: Some(p.cursor),
                    };
                }
            }
        });
        for (tp, (p, _)) in &plan {
            let _ = offsets.add_partition_offset(&tp.0, tp.1, Offset::Offset(p.cursor));
        }
        if let Err(error) = self.consumer.commit(&offsets, CommitMode::Async) {
            warn!(%error, "cannot commit offsets to the consumer group (only lag tools read them)");
        }

        let total_ms = started.elapsed().as_millis() as i64;
        let input_rows = records.len() as i64;
        let output_rows = decoded.batch.num_rows() as i64;
        let mut latest = latest_all;
        latest.retain(|tp, _| plan.contains_key(tp));
        for (tp, (p, _)) in &plan {
            latest.insert(tp.clone(), p.latest);
        }
        let facts = BatchFacts {
            query_id: self.query_id.clone(),
            run_id: self.run_id.clone(),
            name: self.name.clone(),
            batch_id,
            source_description: self.source.description.clone(),
            sink_description: self.sink_description.clone(),
            start: plan
                .iter()
                .map(|(tp, (p, _))| (tp.clone(), p.start.offset))
                .collect(),
            end: plan
                .iter()
                .map(|(tp, (p, _))| (tp.clone(), p.cursor))
                .collect(),
            latest,
            input_rows,
            output_rows,
            rescued_rows: decoded.rescued_rows as i64,
            dead_letter_rows,
            delta_version: Some(version),
            duration_ms: BTreeMap::from([
                ("latestOffset".to_string(), latest_offset_ms),
                ("fetch".to_string(), fetch_ms),
                ("decode".to_string(), decode_ms),
                ("commit".to_string(), commit_ms),
                ("triggerExecution".to_string(), total_ms),
            ]),
            since_previous_s: self
                .previous_start
                .map(|p| started.duration_since(p).as_secs_f64()),
        };
        self.previous_start = Some(started);
        let progress = progress::build(facts);
        self.checkpoint.log_progress(&progress)?;
        progress::emit(&progress);
        self.telemetry.batch_committed(
            &progress,
            &BatchMetrics {
                records: input_rows as u64,
                bytes: records
                    .iter()
                    .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
                    .sum(),
                rows_written: output_rows as u64,
                rescued_rows: decoded.rescued_rows as u64,
                dead_letter_rows: dead_letter_rows as u64,
                duration: started.elapsed(),
                delta_version: Some(version),
                commit_conflicts: commit_retries,
            },
            &self.with_assignment(|a| a.partitions.keys().cloned().collect::<Vec<Tp>>()),
        );
        self.summary.batches += 1;
        self.summary.input_rows += input_rows;
        self.summary.output_rows += output_rows;
        self.summary.rescued_rows += decoded.rescued_rows as i64;
        self.summary.dead_letter_rows += dead_letter_rows;
        self.summary.files += files;
        self.summary.delta_version = Some(version);
        Ok(BatchResult::Committed)
    }

    /// Writes a batch's bad records to the dead-letter table, skipping those a previous attempt
    /// of the same batch already wrote (its txns say how far each partition got).
    fn write_dead_letters(
        &mut self,
        records: &[Record],
        bad: &[crate::decode::BadRecord],
        plan: &BTreeMap<Tp, (PlannedPartition, Vec<Record>)>,
    ) -> Result<i64> {
        let Some(dead_letter) = self.dead_letter.as_mut() else {
            return Ok(0);
        };
        if bad.is_empty() {
            return Ok(0);
        }
        let tps: Vec<Tp> = plan.keys().cloned().collect();
        let ids: Vec<String> = tps
            .iter()
            .map(|tp| dead_letter_app_id(&self.app_prefix, tp))
            .collect();
        let versions = self.runtime.block_on(dead_letter.txn_versions(&ids))?;
        let written: BTreeMap<Tp, Option<i64>> = tps.iter().cloned().zip(versions).collect();
        let fresh: Vec<&crate::decode::BadRecord> = bad
            .iter()
            .filter(|b| {
                let r = &records[b.index];
                let done = written
                    .get(&(r.topic.clone(), r.partition))
                    .copied()
                    .flatten();
                done.is_none_or(|v| r.offset >= v)
            })
            .collect();
        if fresh.is_empty() {
            return Ok(bad.len() as i64);
        }
        let batch = deadletter::batch(records, &fresh, &self.query_id)?;
        let txns: Vec<TxnUpdate> = tps
            .iter()
            .filter(|tp| {
                fresh
                    .iter()
                    .any(|b| records[b.index].topic == tp.0 && records[b.index].partition == tp.1)
            })
            .map(|tp| TxnUpdate {
                app_id: dead_letter_app_id(&self.app_prefix, tp),
                expected: written.get(tp).copied().flatten(),
                version: plan.get(tp).map_or(0, |(p, _)| p.cursor),
            })
            .collect();
        match self
            .runtime
            .block_on(dead_letter.commit(Some(&batch), &txns, HashMap::new()))?
        {
            CommitOutcome::Committed { .. } => Ok(bad.len() as i64),
            CommitOutcome::Conflict(reason) => Err(Error::Runtime(format!(
                "the dead-letter table was written by another worker for the same partitions ({reason}); restart to re-read them"
            ))),
        }
    }

    /// After an abandoned batch: read what the table says for the batch's partitions that are
    /// still ours and seek there; forget their read-ahead.
    fn resync_plan(&mut self, plan: &BTreeMap<Tp, (PlannedPartition, Vec<Record>)>) -> Result<()> {
        let tps: Vec<Tp> = plan.keys().cloned().collect();
        self.resync(&tps)
    }

    /// Seeks partitions (those still ours) to where the table says they continue.
    fn resync(&mut self, tps: &[Tp]) -> Result<()> {
        let still: Vec<Tp> = self.with_assignment(|a| {
            tps.iter()
                .filter(|tp| a.partitions.contains_key(*tp))
                .cloned()
                .collect()
        });
        for tp in tps {
            self.carry.remove(tp);
            self.resume(tp);
        }
        if still.is_empty() {
            return Ok(());
        }
        let context = self.consumer.context().clone();
        let starts = context.resolver.resolve(&still)?;
        let mut tpl = TopicPartitionList::new();
        for (tp, start) in &starts {
            let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(start.offset));
        }
        let result = self
            .consumer
            .seek_partitions(tpl, METADATA_TIMEOUT)
            .map_err(Error::kafka(
                "seek to the table's offsets",
                &self.source.bootstrap,
            ))?;
        for element in result.elements() {
            if let Err(error) = element.error() {
                return Err(Error::Kafka {
                    action: format!("seek {}-{}", element.topic(), element.partition()),
                    bootstrap: self.source.bootstrap.clone(),
                    source: Box::new(error),
                });
            }
        }
        self.with_assignment(|a| {
            for (tp, start) in starts {
                if let Some(slot) = a.partitions.get_mut(&tp) {
                    *slot = start;
                }
            }
        });
        Ok(())
    }
}
