//! The owned partitions' fetched records, taken from librdkafka hundreds at a time.
//!
//! partition fetch queues ──forwarded at assignment──▶ [`FetchQueue`] ──batch call──▶ [`Fetched`]
//!
//! librdkafka puts every partition's records on the consumer's queue, where rebalances and
//! client errors travel too, and rdkafka's `poll` takes one record per call: three clock reads,
//! a lock and an event per record (the clock reads alone were 4 % of the worker's samples
//! reading a backlog; README, Performance). librdkafka's batch
//! call cannot serve that queue (it would answer a rebalance with an empty assignment, as it
//! does for a client without a rebalance callback, and rdkafka handles rebalances as events),
//! so each partition's queue is forwarded, before the partition is assigned, to a queue of the
//! worker's own that only ever holds records and the partition's fetch errors. The consumer's
//! queue keeps the rest, and [`super::Source::poll`] still serves it.
//!
//! Forwarding before the assignment matters: a partition whose first records had gone to the
//! consumer's queue and later ones here could be read out of order. A partition forwarded once
//! stays forwarded (librdkafka keeps the forward on the partition, across reassignments); a
//! seek or a new assignment makes librdkafka discard what was fetched before it, here as on the
//! consumer's queue.

use std::cell::OnceCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::bindings as ffi;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders, Timestamp};
use rdkafka::types::RDKafkaErrorCode;

/// The worker's queue of fetched records (an owned librdkafka queue handle).
///
/// It must go before the client it belongs to: [`super::Source`] holds the only strong
/// reference and drops it first, and the consumer's context holds a weak one to forward
/// partitions as they are assigned.
pub struct FetchQueue {
    queue: NonNull<ffi::rd_kafka_queue_t>,
}

// SAFETY: librdkafka's queue functions lock the queue themselves; the handle may be used from
// any thread, and from several at once.
unsafe impl Send for FetchQueue {}
// SAFETY: as above.
unsafe impl Sync for FetchQueue {}

impl FetchQueue {
    /// A new queue of `client` (None if librdkafka cannot allocate one).
    ///
    /// # Safety
    /// `client` must be a live librdkafka handle that outlives the queue.
    pub unsafe fn new(client: *mut ffi::rd_kafka_t) -> Option<FetchQueue> {
        // SAFETY: the caller guarantees the handle is live.
        let queue = unsafe { ffi::rd_kafka_queue_new(client) };
        NonNull::new(queue).map(|queue| FetchQueue { queue })
    }

    /// Sends the records fetched for `topic`'s `partition` here from now on. False when
    /// librdkafka knows no such partition handle (it creates one on demand, so only for a
    /// topic name it cannot take).
    ///
    /// # Safety
    /// `client` must be the live handle this queue was created on.
    pub unsafe fn forward(
        &self,
        client: *mut ffi::rd_kafka_t,
        topic: &str,
        partition: i32,
    ) -> bool {
        let Ok(topic) = CString::new(topic) else {
            return false;
        };
        // SAFETY: `client` is live (caller); the partition's queue handle is only a reference
        // to the partition's fetch queue, destroyed right after the forward, which librdkafka
        // keeps on the partition itself.
        unsafe {
            let partition_queue =
                ffi::rd_kafka_queue_get_partition(client, topic.as_ptr(), partition);
            if partition_queue.is_null() {
                return false;
            }
            ffi::rd_kafka_queue_forward(partition_queue, self.queue.as_ptr());
            ffi::rd_kafka_queue_destroy(partition_queue);
        }
        true
    }

    /// Moves up to `max` records (or fetch errors) into `into`, waiting up to `wait` for the
    /// first when there is none. Returns how many came.
    pub fn take(&self, wait: Duration, max: usize, into: &mut Fetched) -> usize {
        let mut came = self.take_now(0, max, into);
        if came == 0 && max > 0 && !wait.is_zero() {
            // The batch call waits until it has all it was asked for: ask for one, then take
            // what else has arrived without waiting, so a slow stream is not held back.
            let wait_ms = c_int::try_from(wait.as_millis().max(1)).unwrap_or(c_int::MAX);
            came = self.take_now(wait_ms, 1, into);
            if came > 0 {
                came += self.take_now(0, max - 1, into);
            }
        }
        came
    }

    fn take_now(&self, wait_ms: c_int, max: usize, into: &mut Fetched) -> usize {
        if max == 0 {
            return 0;
        }
        into.messages.reserve(max);
        let filled = into.messages.len();
        let free = &mut into.messages.spare_capacity_mut()[..max];
        // SAFETY: the queue is live; librdkafka writes at most `max` message pointers into
        // the spare capacity reserved above and returns how many (or -1 on an error, when it
        // wrote none). Each pointer is a message the caller now owns, never null, and
        // `FetchedMessage` is a transparent wrapper of a non-null pointer.
        let came = unsafe {
            ffi::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                wait_ms,
                free.as_mut_ptr().cast::<*mut ffi::rd_kafka_message_t>(),
                max,
            )
        };
        let came = usize::try_from(came).unwrap_or(0).min(max);
        // SAFETY: the first `came` slots past `filled` were written by librdkafka (above).
        unsafe { into.messages.set_len(filled + came) };
        came
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: the handle is ours and the client is still live (see the type's docs).
        // Partitions still forwarded here keep the queue itself alive inside librdkafka until
        // they go; only this handle ends.
        unsafe { ffi::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// Records taken from a [`FetchQueue`], in the order librdkafka delivered them.
#[derive(Default)]
pub struct Fetched {
    messages: Vec<FetchedMessage>,
}

impl Fetched {
    /// Hands out the records taken, oldest first, leaving the buffer empty for the next take.
    pub fn drain(&mut self) -> impl Iterator<Item = FetchedMessage> + '_ {
        self.messages.drain(..)
    }
}

/// One record, or a partition's fetch error, as librdkafka delivered it; returned to
/// librdkafka when dropped.
#[repr(transparent)]
pub struct FetchedMessage {
    message: NonNull<ffi::rd_kafka_message_t>,
}

// SAFETY: a message is owned by whoever holds this; librdkafka allows destroying it from any
// thread.
unsafe impl Send for FetchedMessage {}

impl FetchedMessage {
    fn raw(&self) -> &ffi::rd_kafka_message_t {
        // SAFETY: the message lives until this value drops.
        unsafe { self.message.as_ref() }
    }

    /// The record, or the fetch error librdkafka delivered in its place.
    pub fn into_result(self) -> KafkaResult<FetchedRecord> {
        let err = self.raw().err;
        if err == ffi::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(FetchedRecord {
                message: self,
                headers: OnceCell::new(),
            })
        } else {
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::from(err)))
        }
    }
}

impl Drop for FetchedMessage {
    fn drop(&mut self) {
        // SAFETY: the message is ours and destroyed once, here.
        unsafe { ffi::rd_kafka_message_destroy(self.message.as_ptr()) }
    }
}

/// A fetched record, read through rdkafka's [`Message`] trait.
pub struct FetchedRecord {
    message: FetchedMessage,
    /// Read from librdkafka on first use: only queries that keep headers ask.
    headers: OnceCell<Option<OwnedHeaders>>,
}

/// The bytes at `data`, `len` long (None for a null pointer: no key, or a null value).
///
/// # Safety
/// `data` must be null or point at `len` bytes that live as long as `'a`.
unsafe fn bytes<'a>(data: *const c_void, len: usize) -> Option<&'a [u8]> {
    if data.is_null() {
        None
    } else {
        // SAFETY: as the caller guarantees.
        Some(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
    }
}

impl Message for FetchedRecord {
    type Headers = OwnedHeaders;

    fn key(&self) -> Option<&[u8]> {
        let raw = self.message.raw();
        // SAFETY: the key lives with the message.
        unsafe { bytes(raw.key, raw.key_len) }
    }

    fn payload(&self) -> Option<&[u8]> {
        let raw = self.message.raw();
        // SAFETY: the payload lives with the message.
        unsafe { bytes(raw.payload, raw.len) }
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        let raw = self.message.raw();
        if raw.payload.is_null() {
            return None;
        }
        // SAFETY: the message is ours alone; the caller upholds the trait's contract.
        Some(unsafe { std::slice::from_raw_parts_mut(raw.payload.cast::<u8>(), raw.len) })
    }

    fn topic(&self) -> &str {
        // SAFETY: a fetched record's topic handle lives with the message, and so does its
        // name; librdkafka's names are NUL-terminated.
        let name = unsafe { CStr::from_ptr(ffi::rd_kafka_topic_name(self.message.raw().rkt)) };
        // Kafka topic names are ASCII; a name that is not UTF-8 cannot have been subscribed to.
        name.to_str().unwrap_or_default()
    }

    fn partition(&self) -> i32 {
        self.message.raw().partition
    }

    fn offset(&self) -> i64 {
        self.message.raw().offset
    }

    fn timestamp(&self) -> Timestamp {
        use ffi::rd_kafka_timestamp_type_t as Kind;
        let mut kind = Kind::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is live; librdkafka writes only `kind`.
        let ms =
            unsafe { ffi::rd_kafka_message_timestamp(self.message.message.as_ptr(), &mut kind) };
        match kind {
            _ if ms == -1 => Timestamp::NotAvailable,
            Kind::RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(ms),
            Kind::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => Timestamp::LogAppendTime(ms),
            Kind::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => Timestamp::NotAvailable,
        }
    }

    fn headers(&self) -> Option<&OwnedHeaders> {
        self.headers
            .get_or_init(|| {
                let mut native = std::ptr::null_mut();
                // SAFETY: the message is live; librdkafka parses its header block and leaves
                // the headers owned by the message, which outlives this read.
                let err = unsafe {
                    ffi::rd_kafka_message_headers(self.message.message.as_ptr(), &mut native)
                };
                if err != ffi::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || native.is_null() {
                    return None;
                }
                let mut headers = OwnedHeaders::new();
                for index in 0.. {
                    let (mut name, mut value, mut size): (*const c_char, *const c_void, usize) =
                        (std::ptr::null(), std::ptr::null(), 0);
                    // SAFETY: `native` lives with the message; librdkafka writes the three
                    // out-pointers, pointing into the header block, or returns an error past
                    // the last header.
                    let err = unsafe {
                        ffi::rd_kafka_header_get_all(
                            native, index, &mut name, &mut value, &mut size,
                        )
                    };
                    if err != ffi::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                        break;
                    }
                    // SAFETY: header names are NUL-terminated; the value is `size` bytes or
                    // null, inside the message.
                    let key = unsafe { CStr::from_ptr(name) }.to_string_lossy();
                    let value = unsafe { bytes(value, size) };
                    headers = headers.insert(Header { key: &key, value });
                }
                Some(headers)
            })
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

    /// What one produced record should read back as.
    #[derive(Debug, PartialEq)]
    struct Seen {
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: Timestamp,
        headers: Vec<(String, Option<Vec<u8>>)>,
    }

    fn seen(message: &impl Message<Headers = OwnedHeaders>) -> Seen {
        Seen {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            timestamp: message.timestamp(),
            headers: message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// A mock cluster whose topic `t` has two partitions of `per_partition` records each:
    /// every third without a key, every fourth with a null value, each with two headers (the
    /// second without a value) and a create time of 1000 + its number.
    fn cluster(
        per_partition: i64,
    ) -> (
        MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        String,
    ) {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 2, 1).expect("topic");
        let bootstrap = cluster.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("producer");
        for n in 0..per_partition {
            for partition in 0..2 {
                let key = format!("k{n}");
                let value = format!("{{\"n\":{n},\"p\":{partition}}}");
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "h",
                        value: Some(key.as_bytes()),
                    })
                    .insert(Header::<&[u8]> {
                        key: "empty",
                        value: None,
                    });
                let mut record = BaseRecord::<str, str>::to("t")
                    .partition(partition)
                    .timestamp(1000 + n)
                    .headers(headers);
                if n % 3 != 0 {
                    record = record.key(&key);
                }
                if n % 4 != 0 {
                    record = record.payload(&value);
                }
                producer.send(record).map_err(|(e, _)| e).expect("queued");
            }
        }
        producer.flush(Duration::from_secs(10)).expect("flushed");
        (cluster, bootstrap)
    }

    fn consumer(bootstrap: &str) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "fetch-test")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            .create()
            .expect("consumer")
    }

    fn assign(consumer: &BaseConsumer, offsets: &[(i32, i64)]) {
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in offsets {
            tpl.add_partition_offset("t", *partition, Offset::Offset(*offset))
                .expect("offset");
        }
        consumer.assign(&tpl).expect("assign");
    }

    /// Takes from `queue` until `n` records came or 10 s passed, returning what came in order.
    fn take_all(queue: &FetchQueue, n: usize) -> Vec<KafkaResult<Seen>> {
        let mut fetched = Fetched::default();
        let mut came = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while came.len() < n && std::time::Instant::now() < deadline {
            queue.take(Duration::from_millis(100), 7, &mut fetched);
            for message in fetched.drain() {
                came.push(message.into_result().map(|record| seen(&record)));
            }
        }
        came
    }

    #[test]
    fn a_forwarded_partitions_records_are_taken_in_order_as_rdkafka_reads_them() {
        let (_cluster, bootstrap) = cluster(20);
        // What rdkafka's own poll reads, one record at a time.
        let reference = consumer(&bootstrap);
        assign(&reference, &[(0, 0), (1, 0)]);
        let mut expected = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while expected.len() < 40 && std::time::Instant::now() < deadline {
            if let Some(message) = reference.poll(Duration::from_millis(100)) {
                expected.push(seen(&message.expect("a record").detach()));
            }
        }
        assert_eq!(
            expected.len(),
            40,
            "the reference consumer read every record"
        );

        let consumer = consumer(&bootstrap);
        // SAFETY: the consumer lives past the queue (dropped first, at the end of the test).
        let queue = unsafe { FetchQueue::new(consumer.client().native_ptr()) }.expect("queue");
        for partition in 0..2 {
            // SAFETY: as above.
            assert!(unsafe { queue.forward(consumer.client().native_ptr(), "t", partition) });
        }
        assign(&consumer, &[(0, 0), (1, 0)]);
        let came: Vec<Seen> = take_all(&queue, 40)
            .into_iter()
            .map(|record| record.expect("a record"))
            .collect();
        let in_partition = |records: &[Seen], p: i32| -> Vec<i64> {
            records
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset)
                .collect()
        };
        for partition in 0..2 {
            assert_eq!(in_partition(&came, partition), (0..20).collect::<Vec<_>>());
        }
        let mut sorted = came;
        sorted.sort_by_key(|r| (r.partition, r.offset));
        expected.sort_by_key(|r| (r.partition, r.offset));
        assert_eq!(sorted, expected);
        assert!(sorted.iter().any(|r| r.key.is_none()) && sorted.iter().any(|r| r.value.is_none()));
        // Nothing of a forwarded partition goes to the consumer's own queue.
        assert!(consumer.poll(Duration::from_millis(200)).is_none());
        drop(queue);
    }

    #[test]
    fn a_fetch_error_comes_in_a_records_place() {
        let (_cluster, bootstrap) = cluster(5);
        let consumer = consumer(&bootstrap);
        // SAFETY: the consumer lives past the queue.
        let queue = unsafe { FetchQueue::new(consumer.client().native_ptr()) }.expect("queue");
        // SAFETY: as above.
        assert!(unsafe { queue.forward(consumer.client().native_ptr(), "t", 0) });
        // Past the end, with auto.offset.reset=error: librdkafka reports it on the partition.
        assign(&consumer, &[(0, 50)]);
        let came = take_all(&queue, 1);
        match came.first() {
            Some(Err(KafkaError::MessageConsumption(code))) => assert!(
                matches!(
                    code,
                    RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange
                ),
                "{code:?}"
            ),
            other => panic!("expected a fetch error, got {other:?}"),
        }
    }

    #[test]
    fn taking_nothing_waits_at_most_the_wait_and_never_more_than_asked() {
        let (_cluster, bootstrap) = cluster(3);
        let consumer = consumer(&bootstrap);
        // SAFETY: the consumer lives past the queue.
        let queue = unsafe { FetchQueue::new(consumer.client().native_ptr()) }.expect("queue");
        let mut fetched = Fetched::default();
        let started = std::time::Instant::now();
        assert_eq!(queue.take(Duration::from_millis(150), 10, &mut fetched), 0);
        assert!(started.elapsed() >= Duration::from_millis(140));
        assert_eq!(queue.take(Duration::from_millis(150), 0, &mut fetched), 0);
        // SAFETY: as above.
        assert!(unsafe { queue.forward(consumer.client().native_ptr(), "t", 1) });
        assign(&consumer, &[(1, 0)]);
        let mut came = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while came < 3 && std::time::Instant::now() < deadline {
            let now = queue.take(Duration::from_millis(100), 2, &mut fetched);
            assert!(now <= 2, "took {now} when asked for 2");
            came += now;
            fetched.drain().for_each(drop);
        }
        assert_eq!(came, 3);
    }
}
