//! The micro-batch loop: plan offsets -> read records -> decode -> commit to Delta with the
//! partitions' txns -> commit group offsets -> report progress; by trigger, until stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tracing::{Instrument, info, info_span, warn};
use tributary_crds::{OnError, StartingOffsets, StreamingIngestion, TriggerKind};

use crate::checkpoint::{
    self, AvailableNowRun, CheckpointDir, OwnerClaim, from_partition_offsets, to_partition_offsets,
};
use crate::decode::JsonDecoder;
use crate::error::{Error, Result};
use crate::maintenance::{self, Maintenance};
use crate::metrics::BatchMetrics;
use crate::plan::{Placement, Plan, PlannedPartition, ReadAhead, ReadAheadState, TopicNames};
use crate::progress::{self, BatchFacts};
use crate::secrets;
use crate::sink::{CommitOutcome, DeltaSink, TxnUpdate};
use crate::source::{
    self, Assignment, METADATA_TIMEOUT, PartitionStart, Record, SourceConfig, SourceContext,
    StartResolver, Tp,
};
use crate::telemetry::Telemetry;
use crate::trigger::Schedule;
use crate::{deadletter, source::subscription_partitions};

/// How long a batch waits for planned offsets that do not arrive before committing what it has.
const BATCH_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Records read ahead per partition before the partition is paused.
const READ_AHEAD_RECORDS: usize = 50_000;
/// Environment variable overriding [`READ_AHEAD_RECORDS`].
const READ_AHEAD_ENV: &str = "TRIBUTARY_READ_AHEAD_RECORDS";
/// Bytes read ahead over all partitions before the partition being read is paused.
const READ_AHEAD_BYTES: usize = 16 << 20;
/// A batch stops reading at this many bytes of records (payload, key, headers and per-record
/// overhead) and commits; the rest waits for the next batch. This, the read-ahead and
/// librdkafka's queue bound the worker's memory whatever the backlog (a first availableNow
/// batch used to read everything). At 16 MiB a batch is ~100k sensor readings and a ~1 MiB
/// Parquet file, the commit's fixed cost is small against it, and an availableNow run peaks at
/// ~210 MiB resident (32 MiB: ~280 MiB, no faster); background compaction merges the files.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Environment variable overriding [`MAX_BATCH_BYTES`].
const MAX_BATCH_BYTES_ENV: &str = "TRIBUTARY_MAX_BATCH_BYTES";
/// A continuous batch ends when the consumer has had nothing for this long...
const OPEN_BATCH_QUIET: Duration = Duration::from_millis(20);
/// ...or after reading this long, so a steady stream still commits within about a second.
const OPEN_BATCH_MAX_READ: Duration = Duration::from_millis(500);
/// Records polled in a row before the batch loop looks at the clock, the stop flag and the
/// assignment (each costs a lock or a system call, too much to pay per record).
const POLL_BURST: usize = 512;
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
    // Refused credentials, an untrusted certificate or an unreachable broker stop the worker
    // here, before the checkpoint is claimed or the table created for a query that cannot read.
    crate::connection::probe(&source)?;

    let delta = &spec.sink.delta;
    // The checkpoint's storage options default to the sink's, so both are resolved first.
    let storage_options = secrets::storage_options(
        &delta.storage_options,
        &delta.secret_storage_options,
        "spec.sink.delta",
    )?;
    let format = &spec.format.json;
    let decoder = JsonDecoder::new(format, &spec.metadata_columns)?;
    // A table named through Unity Catalog is resolved (and registered when absent) before the
    // checkpoint is claimed, so a refused token or an unknown table leaves nothing behind.
    let sink_table = runtime.block_on(crate::catalog::locate_sink(
        delta,
        decoder.table_schema(),
        &storage_options,
        &format!("Written by Tributary ingestion {namespace}/{name}"),
    ))?;
    let table_uri = sink_table.location.clone();
    let table_options = sink_table.storage_options.clone();
    let renewal = sink_table.catalog.and_then(|(client, resolved)| {
        crate::catalog::Renewal::of(client, &resolved, storage_options.clone())
    });
    let checkpoint = runtime.block_on(CheckpointDir::open(
        &spec.checkpoint.location,
        &checkpoint::storage_options(&spec.checkpoint, &storage_options)?,
        &OwnerClaim {
            namespace: namespace.clone(),
            name: name.clone(),
        },
    ))?;
    let query_id = runtime.block_on(checkpoint.metadata())?.id;
    let run_id = uuid::Uuid::new_v4().to_string();
    info!(query_id, run_id, "query identity");

    let sink_description = format!("DeltaSink[{}]", sink_table.description);
    let open_table = || {
        runtime.block_on(DeltaSink::open_or_create(
            &table_uri,
            table_options.clone(),
            decoder.table_schema(),
            delta.partition_by.clone(),
            delta.checkpoint_interval.unwrap_or(10),
            delta.target_file_size.map(|s| s as u64),
            &format!("Written by Tributary ingestion {namespace}/{name}"),
        ))
    };
    let sink = Arc::new(Mutex::new(open_table()?));
    // Queries that run for long compact their small files in the background, on a second
    // handle (a long availableNow backfill writes one ~1 MiB file per batch); once is one batch.
    let maintenance = if kind == TriggerKind::Once {
        None
    } else {
        Maintenance::from_env(open_table()?, runtime.clone())
    };
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
    let initial = match runtime.block_on(checkpoint.initial_offsets())? {
        Some(initial) => initial,
        None => {
            let resolved = resolve_starting_offsets(&metadata_client, &source)?;
            runtime.block_on(checkpoint.save_initial_offsets(&resolved))?
        }
    };
    let targets: Option<BTreeMap<Tp, i64>> = match kind {
        TriggerKind::AvailableNow => Some(available_now_targets(
            &metadata_client,
            &source,
            &checkpoint,
            &run_id,
            &runtime,
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
        security: source.security.clone(),
    };
    // A run to completion reads known partitions with a single worker (validation keeps
    // replicas at 1), so it assigns them directly instead of joining the group.
    let fixed: Option<Vec<Tp>> = targets.as_ref().map(|t| t.keys().cloned().collect());
    let consumer = source::start_consumer(&source, context, fixed.as_deref())?;

    let mut pipeline = Pipeline {
        source,
        consumer,
        assignment,
        sink,
        dead_letter,
        decoder,
        checkpoint,
        runtime,
        schedule: Schedule::new(kind),
        targets,
        read_ahead: ReadAhead::new(
            // Overridable so that tests can exercise pausing with little data.
            env_number(READ_AHEAD_ENV).unwrap_or(READ_AHEAD_RECORDS),
            READ_AHEAD_BYTES,
        ),
        topic_names: TopicNames::default(),
        max_batch_bytes: env_number(MAX_BATCH_BYTES_ENV).unwrap_or(MAX_BATCH_BYTES),
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
        maintenance,
        offsets_client,
        renewal,
    };
    if let Err(error) = pipeline.run() {
        if error.is_refused_connection() {
            let Pipeline { consumer, .. } = pipeline;
            crate::connection::abandon(consumer);
        }
        return Err(error);
    }
    Ok(pipeline.summary)
}

/// A positive number from the environment (tuning knobs and test hooks).
fn env_number(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v: &usize| *v > 0)
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
    runtime: &Handle,
) -> Result<BTreeMap<Tp, i64>> {
    if let Some(run) = runtime.block_on(checkpoint.available_now())?
        && !run.finished
    {
        info!(planned_by = %run.run_id, targets = ?run.targets, "resuming an unfinished availableNow run");
        return Ok(from_partition_offsets(&run.targets));
    }
    let tps = subscription_partitions(client, &source.subscription, &source.bootstrap)?;
    let targets = latest_offsets(client, &tps, &source.bootstrap)?;
    runtime.block_on(checkpoint.save_available_now(&AvailableNowRun {
        run_id: run_id.to_string(),
        planned_at: chrono::Utc::now().to_rfc3339(),
        targets: to_partition_offsets(&targets),
        finished: false,
    }))?;
    info!(targets = ?to_partition_offsets(&targets), "availableNow targets");
    Ok(targets)
}

struct Pipeline {
    source: SourceConfig,
    consumer: BaseConsumer<SourceContext>,
    assignment: Arc<Mutex<Assignment>>,
    sink: Arc<Mutex<DeltaSink>>,
    dead_letter: Option<DeltaSink>,
    decoder: JsonDecoder,
    checkpoint: CheckpointDir,
    runtime: Handle,
    schedule: Schedule,
    targets: Option<BTreeMap<Tp, i64>>,
    /// Records read ahead of a batch's planned end, kept for the next batch.
    read_ahead: ReadAhead,
    topic_names: TopicNames,
    max_batch_bytes: usize,
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
    /// Background compaction (continuous queries).
    maintenance: Option<Maintenance>,
    /// The client that answers offset lookups; polled every turn so its log and error events
    /// do not pile up in a long-running worker.
    offsets_client: Arc<BaseConsumer>,
    /// Metrics, readiness and (in a pod) status.
    telemetry: Telemetry,
    /// Storage credentials the catalog vended, renewed before they expire.
    renewal: Option<crate::catalog::Renewal>,
}

enum BatchResult {
    /// Nothing to read now.
    Idle,
    /// Committed; `full` when the batch stopped at its cap or byte budget with more to read.
    Committed { full: bool },
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
        let mut batch_id = self
            .runtime
            .block_on(self.checkpoint.last_batch_id())?
            .map_or(0, |b| b + 1);
        loop {
            self.telemetry.heartbeat();
            self.maintain();
            self.renew_credentials()?;
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
                BatchResult::Committed { full } => {
                    if full {
                        self.schedule.backlog_remains();
                    }
                    batch_id += 1;
                    if self.schedule.kind() == TriggerKind::Once {
                        self.finish()?;
                        return Ok(());
                    }
                }
                BatchResult::Abandoned => {}
                BatchResult::Idle => {
                    self.schedule.nothing_read();
                    if self.schedule.kind() == TriggerKind::Once && self.once_has_nothing() {
                        self.finish()?;
                        return Ok(());
                    }
                    self.poll_for(IDLE_POLL)?;
                }
            }
        }
    }

    /// Between batches: serves the offsets client's events, and starts or collects background
    /// compaction.
    fn maintain(&mut self) {
        if let Some(Err(error)) = self.offsets_client.poll(Duration::ZERO) {
            tracing::debug!(%error, "offsets client event");
        }
        let Some(outcome) = self.maintenance.as_mut().and_then(Maintenance::tick) else {
            return;
        };
        if let Some(label) = maintenance::outcome_label(&outcome) {
            self.telemetry
                .metrics
                .record_compaction(label, outcome.files_removed);
        }
    }

    /// Between batches: new storage credentials from the catalog when the current ones are
    /// due for renewal, for the sink and the compaction handle.
    fn renew_credentials(&mut self) -> Result<()> {
        let Some(renewal) = self.renewal.as_mut() else {
            return Ok(());
        };
        if !renewal.due(std::time::SystemTime::now()) {
            return Ok(());
        }
        let Some(options) = self.runtime.block_on(renewal.renew())? else {
            return Ok(());
        };
        {
            let mut sink = self
                .sink
                .lock()
                .map_err(|_| Error::Runtime("sink lock poisoned".into()))?;
            self.runtime.block_on(sink.reopen_with(options.clone()))?;
        }
        if let Some(maintenance) = self.maintenance.as_mut() {
            maintenance.renew_storage_options(options);
        }
        Ok(())
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
            self.read_ahead.forget(&tp);
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

    /// One poll; a record goes to the batch being read (`plan`) or the read-ahead. False when
    /// nothing came.
    fn poll_once(&mut self, timeout: Duration, plan: Option<&mut Plan>) -> bool {
        let message = match self.consumer.poll(timeout) {
            None => return false,
            // The position is no longer on the broker (retention, or the topic was recreated):
            // reported as OffsetOutOfRange, or, with auto.offset.reset=error, AutoOffsetReset.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange
                | rdkafka::types::RDKafkaErrorCode::AutoOffsetReset,
            ))) => {
                warn!("an offset being read is no longer on the broker; re-reading where to start");
                self.offsets_lost = true;
                return false;
            }
            Some(Err(error)) => {
                warn!(%error, "Kafka consumer error");
                return false;
            }
            Some(Ok(message)) => message,
        };
        let (partition, offset) = (message.partition(), message.offset());
        let topic = self.topic_names.get(message.topic());
        let make = || Record::from_message(&message, topic.clone());
        let record = match plan {
            Some(plan) => match plan.offer(&topic, partition, offset, make) {
                Placement::Taken | Placement::Duplicate => return true,
                Placement::Elsewhere(record) => record,
            },
            None => make(),
        };
        drop(message);
        let tp = (topic.to_string(), partition);
        let position = self.with_assignment(|a| a.partitions.get(&tp).map(|s| s.offset));
        if position.is_some_and(|p| offset >= p)
            && self.read_ahead.push(tp.clone(), record) == ReadAheadState::Full
            && self.paused.insert(tp.clone())
        {
            // Memory stays bounded: a partition far ahead of the batch stops fetching until
            // a batch needs it again.
            tracing::debug!(topic = %tp.0, partition = tp.1, "read-ahead full: partition paused");
            self.set_paused(&tp, true);
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
            && let Some(mut run) = self.runtime.block_on(self.checkpoint.available_now())?
        {
            run.finished = true;
            self.runtime
                .block_on(self.checkpoint.save_available_now(&run))?;
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
        let mut plan = self.plan(&assigned)?;
        let latest_offset_ms = started.elapsed().as_millis() as i64;
        if plan.is_empty() {
            return Ok(BatchResult::Idle);
        }

        // Read: first what was read ahead, then from the consumer.
        let (mut moved, mut advanced) = (0, 0);
        let allowance = plan.allowance();
        for planned in plan.partitions_mut() {
            let (bytes, offsets) = self.read_ahead.drain_into(planned, allowance - advanced);
            moved += bytes;
            advanced += offsets;
            self.resume(&planned.tp);
        }
        plan.bytes += moved;
        plan.offsets += advanced;
        let mut last_progress = Instant::now();
        // A continuous batch takes what has arrived: it ends when the consumer has nothing more
        // for a moment, or after a bounded read; what comes later is the next batch's.
        let open_ended = self.targets.is_none();
        let (first_wait, read_until) = if open_ended {
            (OPEN_BATCH_QUIET, Instant::now() + OPEN_BATCH_MAX_READ)
        } else {
            (
                Duration::from_millis(100),
                Instant::now() + BATCH_READ_TIMEOUT,
            )
        };
        let mut drained = false;
        loop {
            if plan.complete()
                || plan.capped()
                || plan.bytes >= self.max_batch_bytes
                || (open_ended && (drained || Instant::now() >= read_until))
            {
                break;
            }
            if self.stopped() {
                info!("stop requested: the batch in flight is abandoned, nothing committed");
                return Ok(BatchResult::Abandoned);
            }
            let mut timeout = first_wait;
            let mut got = false;
            for polled in 0..POLL_BURST {
                if !self.poll_once(timeout, Some(&mut plan)) {
                    if polled == 0 {
                        drained = true;
                        if !open_ended {
                            self.advance_to_positions(&mut plan);
                        }
                    }
                    break;
                }
                got = true;
                if plan.capped() || plan.bytes >= self.max_batch_bytes {
                    break;
                }
                // Only the first poll of a burst waits; the rest take what is queued.
                timeout = Duration::ZERO;
            }
            if got {
                last_progress = Instant::now();
                drained = false;
            }
            if self.check_assignment()? {
                info!("partitions were re-read from the table: the batch is abandoned");
                return Ok(BatchResult::Abandoned);
            }
            if self.with_assignment(|a| a.generation) != generation {
                let lost = self.with_assignment(|a| {
                    plan.partitions()
                        .iter()
                        .any(|p| !a.partitions.contains_key(&p.tp))
                });
                if lost {
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
        let full = plan.capped() || plan.bytes >= self.max_batch_bytes;
        // Partitions whose records did not arrive (e.g. the end of a compacted range), or that
        // the byte budget left for the next batch.
        plan.retain_read();
        if plan.is_empty() {
            return Ok(BatchResult::Idle);
        }
        let fetch_ms = started.elapsed().as_millis() as i64 - latest_offset_ms;

        // Decode.
        let decode_started = Instant::now();
        let records = plan.take_records();
        let decoded = self.decoder.decode(&records)?;
        let decode_ms = decode_started.elapsed().as_millis() as i64;
        if self.decoder.on_error() == OnError::Fail
            && let Some(bad) = decoded.bad.first()
        {
            let record = &records[bad.index];
            return Err(Error::BadRecord {
                topic: record.topic.to_string(),
                partition: record.partition,
                offset: record.offset,
                reason: bad.reason.clone(),
            });
        }

        // Commit: dead letters first (idempotent through their own txns), then the batch.
        let commit_started = Instant::now();
        let Some(dead_letter_rows) = self.write_dead_letters(&records, &decoded.bad, &plan)? else {
            warn!(
                "another worker wrote dead letters for these partitions: the batch is abandoned and the partitions re-read from the table"
            );
            self.resync_plan(&plan)?;
            return Ok(BatchResult::Abandoned);
        };
        let txns: Vec<TxnUpdate> = plan
            .partitions()
            .iter()
            .map(|p| TxnUpdate {
                app_id: app_id(&self.app_prefix, &p.tp),
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
            for p in plan.partitions() {
                if let Some(start) = a.partitions.get_mut(&p.tp) {
                    *start = PartitionStart {
                        offset: p.cursor,
                        table_version: Some(p.cursor),
                    };
                }
            }
        });
        for p in plan.partitions() {
            let _ = offsets.add_partition_offset(&p.tp.0, p.tp.1, Offset::Offset(p.cursor));
        }
        if let Err(error) = self.consumer.commit(&offsets, CommitMode::Async) {
            warn!(%error, "cannot commit offsets to the consumer group (only lag tools read them)");
        }

        let total_ms = started.elapsed().as_millis() as i64;
        let input_rows = records.len() as i64;
        let output_rows = decoded.batch.num_rows() as i64;
        let latest = plan
            .partitions()
            .iter()
            .map(|p| (p.tp.clone(), p.latest.max(p.cursor)))
            .collect();
        let facts = BatchFacts {
            query_id: self.query_id.clone(),
            run_id: self.run_id.clone(),
            name: self.name.clone(),
            batch_id,
            source_description: self.source.description.clone(),
            sink_description: self.sink_description.clone(),
            start: plan
                .partitions()
                .iter()
                .map(|p| (p.tp.clone(), p.start.offset))
                .collect(),
            end: plan
                .partitions()
                .iter()
                .map(|p| (p.tp.clone(), p.cursor))
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
        self.runtime
            .block_on(self.checkpoint.log_progress(&progress))?;
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
        Ok(BatchResult::Committed { full })
    }

    /// A partition whose consumer position passed offsets that never arrive as records
    /// (transaction markers, offsets removed by compaction) is read up to that position;
    /// otherwise its batch would wait for them until BATCH_READ_TIMEOUT.
    fn advance_to_positions(&self, plan: &mut Plan) {
        // Records refused by the cap wait in the read-ahead behind the position: never skip them.
        if plan.capped() {
            return;
        }
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for element in positions.elements() {
            let tp = (element.topic().to_string(), element.partition());
            if let Offset::Offset(position) = element.offset()
                && self.read_ahead.next_offset(&tp).is_none()
                && let Some(planned) = plan.get_mut(&tp.0, tp.1)
                && position > planned.cursor
            {
                planned.cursor = position.min(planned.end);
            }
        }
    }

    /// Plans a batch: for each assigned partition, the offsets it may cover. A run to
    /// completion reads up to its targets; a continuous query takes what arrives (the read loop
    /// bounds it), with librdkafka's high watermarks from fetch responses as the latest offsets
    /// for lag, rather than a ListOffsets request per partition. The offset cap and the byte
    /// budget may end a batch earlier.
    fn plan(&mut self, assigned: &BTreeMap<Tp, PartitionStart>) -> Result<Plan> {
        // maxOffsetsPerTrigger caps the batch's offsets in total, taken in the order the records
        // arrive: librdkafka fetches every partition in turn, so each gets its share. (Spark
        // splits the cap over partitions by backlog up front; fixed per-partition ends made the
        // records past them wait in the read-ahead, pause their partitions and be fetched again.)
        let cap = self
            .max_offsets
            .filter(|_| self.schedule.honours_rate_limit());
        let mut plan = Plan::with_offset_cap(cap);
        for (tp, start) in assigned {
            let cached = source::cached_high_watermark(&self.consumer, tp);
            let end = match &self.targets {
                // A partition that appeared after a run was planned waits for the next run.
                Some(targets) => match targets.get(tp) {
                    Some(target) => *target,
                    None => continue,
                },
                // Continuous: whatever arrives (see the read loop).
                None => i64::MAX,
            };
            if end <= start.offset {
                continue;
            }
            let topic = self.topic_names.get(&tp.0);
            plan.push(
                topic,
                PlannedPartition {
                    tp: tp.clone(),
                    start: *start,
                    end,
                    latest: cached.unwrap_or(start.offset),
                    cursor: start.offset,
                    records: Vec::new(),
                },
            );
        }
        Ok(plan)
    }

    /// Writes a batch's bad records to the dead-letter table, skipping those a previous attempt
    /// of the same batch already wrote (its txns say how far each partition got). None when
    /// another worker moved one of the partitions' dead-letter txns meanwhile: it owns them now.
    fn write_dead_letters(
        &mut self,
        records: &[Record],
        bad: &[crate::decode::BadRecord],
        plan: &Plan,
    ) -> Result<Option<i64>> {
        let Some(dead_letter) = self.dead_letter.as_mut() else {
            return Ok(Some(0));
        };
        if bad.is_empty() {
            return Ok(Some(0));
        }
        let tps: Vec<Tp> = plan.partitions().iter().map(|p| p.tp.clone()).collect();
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
                    .get(&(r.topic.to_string(), r.partition))
                    .copied()
                    .flatten();
                done.is_none_or(|v| r.offset >= v)
            })
            .collect();
        if fresh.is_empty() {
            return Ok(Some(bad.len() as i64));
        }
        let batch = deadletter::batch(records, &fresh, &self.query_id)?;
        let txns: Vec<TxnUpdate> = tps
            .iter()
            .filter(|tp| {
                fresh
                    .iter()
                    .any(|b| *records[b.index].topic == *tp.0 && records[b.index].partition == tp.1)
            })
            .map(|tp| TxnUpdate {
                app_id: dead_letter_app_id(&self.app_prefix, tp),
                expected: written.get(tp).copied().flatten(),
                version: plan.get(tp).map_or(0, |p| p.cursor),
            })
            .collect();
        match self
            .runtime
            .block_on(dead_letter.commit(Some(&batch), &txns, HashMap::new()))?
        {
            CommitOutcome::Committed { .. } => Ok(Some(bad.len() as i64)),
            CommitOutcome::Conflict(reason) => {
                tracing::debug!(reason, "dead-letter commit conflict");
                Ok(None)
            }
        }
    }

    /// After an abandoned batch: read what the table says for the batch's partitions that are
    /// still ours and seek there; forget their read-ahead.
    fn resync_plan(&mut self, plan: &Plan) -> Result<()> {
        let tps: Vec<Tp> = plan.partitions().iter().map(|p| p.tp.clone()).collect();
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
            self.read_ahead.forget(tp);
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
