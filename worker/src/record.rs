//! One Kafka record as the worker holds it, and what decoding may say of it. A leaf: the
//! source makes records, the batch buffers hold them, decode turns them into rows and the
//! dead-letter table keeps the ones that did not become rows.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rdkafka::message::{Headers, Message};

/// One Kafka record, owned.
#[derive(Clone, Debug)]
pub struct Record {
    /// Shared by every record of the topic: one allocation per topic, not per record.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    /// 0 = create time, 1 = log append time (Spark's timestampType); -1 when absent.
    pub timestamp_type: i32,
    /// Key and value are slices of [`Payloads`]' chunks.
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub value: Option<Bytes>,
}

impl Record {
    /// Copies a message out of librdkafka's buffer, its key and value into `payloads`;
    /// `topic` is the message's topic name, shared. Headers are read only when `keep_headers`
    /// (the query keeps them, Spark's includeHeaders): librdkafka parses a record's header
    /// block on first access, allocating and freeing a buffer even when the block says "no
    /// headers", which took a twentieth of the worker's CPU reading a backlog of 1M readings.
    pub fn from_message<M: Message>(
        message: &M,
        topic: Arc<str>,
        payloads: &mut Payloads,
        keep_headers: bool,
    ) -> Record {
        use rdkafka::message::Timestamp;
        let (timestamp_ms, timestamp_type) = match message.timestamp() {
            Timestamp::NotAvailable => (None, -1),
            Timestamp::CreateTime(ms) => (Some(ms), 0),
            Timestamp::LogAppendTime(ms) => (Some(ms), 1),
        };
        let headers = match keep_headers.then(|| message.headers()).flatten() {
            Some(headers) => headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect(),
            None => Vec::new(),
        };
        Record {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms,
            timestamp_type,
            key: message.key().map(|key| payloads.copy(key)),
            headers,
            value: message.payload().map(|value| payloads.copy(value)),
        }
    }
}

/// The keys and values of the records being read, copied into chunks of [`Payloads::CHUNK`]
/// bytes that the records share, instead of one allocation per payload.
///
/// A backlog is read at hundreds of thousands of records a second: an allocation and a free per
/// record cost as much as decoding it, and memory freed after each batch comes back from the
/// system as fresh pages that the kernel zeroes again (a fifth of the worker's page faults). A
/// chunk is used again once no record holds a slice of it (its batch has been decoded and
/// handed over), up to [`Payloads::POOLED`] chunks; memory beyond that is freed when its last
/// record goes.
#[derive(Default)]
pub struct Payloads {
    /// The chunk being filled.
    current: Option<BytesMut>,
    /// Chunks filled, oldest first: records may still hold slices of them.
    filled: VecDeque<BytesMut>,
}

impl Payloads {
    /// 1 MiB: thousands of typical payloads; larger ones get an allocation of their own.
    pub const CHUNK: usize = 1 << 20;
    /// Chunks kept for reuse: two batches at the default byte budget and the read-ahead.
    pub const POOLED: usize = 48;

    /// A copy of `bytes`, sharing a chunk with the payloads copied before and after it.
    pub fn copy(&mut self, bytes: &[u8]) -> Bytes {
        if bytes.len() > Self::CHUNK / 8 {
            return Bytes::copy_from_slice(bytes);
        }
        let current = match &mut self.current {
            Some(current) if current.capacity() - current.len() >= bytes.len() => current,
            _ => self.next_chunk(),
        };
        current.extend_from_slice(bytes);
        current.split_to(bytes.len()).freeze()
    }

    /// Retires the chunk being filled and starts another: the oldest filled chunk that no
    /// record holds any more, or a new one.
    fn next_chunk(&mut self) -> &mut BytesMut {
        // Batches end in the order they were read, so the oldest chunks are free first.
        let reusable = self
            .filled
            .iter_mut()
            .position(|chunk| chunk.try_reclaim(Self::CHUNK));
        let next = match reusable.and_then(|i| self.filled.remove(i)) {
            Some(chunk) => chunk,
            None => BytesMut::with_capacity(Self::CHUNK),
        };
        if let Some(full) = self.current.take() {
            self.filled.push_back(full);
            if self.filled.len() > Self::POOLED {
                // Still held by records (or it would have been reused): it is freed with them.
                self.filled.pop_front();
            }
        }
        self.current.insert(next)
    }
}

/// A record that did not become a row (deadLetter / fail), with why.
#[derive(Clone, Debug)]
pub struct BadRecord {
    /// Its position in the batch's records.
    pub index: usize,
    pub reason: String,
}

/// The value as text for `_rescued_data`: UTF-8 as is; other bytes escaped as `\xNN` so that
/// nothing of the input is lost.
pub fn raw_text(value: Option<&[u8]>) -> String {
    let Some(mut bytes) = value else {
        return String::new();
    };
    let mut text = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                text.push_str(valid);
                return text;
            }
            Err(error) => {
                let (valid, rest) = bytes.split_at(error.valid_up_to());
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let invalid = error.error_len().unwrap_or(rest.len());
                for byte in &rest[..invalid] {
                    text.push_str(&format!("\\x{byte:02X}"));
                }
                bytes = &rest[invalid..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_share_chunks_and_reuse_them_once_no_record_holds_them() {
        let mut payloads = Payloads::default();
        let a = payloads.copy(b"first");
        let b = payloads.copy(b"second");
        assert_eq!((&a[..], &b[..]), (&b"first"[..], &b"second"[..]));
        // Adjacent in one chunk.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        let chunk_start = a.as_ptr();
        // Fill the chunk, keeping one slice of it alive.
        let filler = vec![b'x'; Payloads::CHUNK / 8];
        let mut held = Vec::new();
        while payloads.filled.is_empty() {
            held.push(payloads.copy(&filler));
        }
        assert!(held.iter().all(|h| h[..] == filler[..]));
        // The next chunk cannot be the first one: `a` still points into it.
        let mut second = Vec::new();
        while payloads.filled.len() < 2 {
            second.push(payloads.copy(&filler));
        }
        let first_chunk = chunk_start..chunk_start.wrapping_add(Payloads::CHUNK);
        assert!(second.iter().all(|s| !first_chunk.contains(&s.as_ptr())));
        assert_eq!(
            &a[..],
            b"first",
            "a slice stays valid while its chunk is pooled"
        );
        // Once nothing holds the first chunk, it is the next one filled.
        drop((a, b, held));
        let mut copies = 0;
        loop {
            let copy = payloads.copy(&filler);
            if copy.as_ptr() == chunk_start {
                break;
            }
            copies += 1;
            assert!(copies <= 8, "the first chunk was not used again");
        }
        drop(second);
    }

    #[test]
    fn headers_are_copied_only_when_the_query_keeps_them() {
        use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some(&b"abc"[..]),
            })
            .insert(Header {
                key: "empty",
                value: None::<&[u8]>,
            });
        let message = OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(b"k".to_vec()),
            "t".to_string(),
            Timestamp::CreateTime(1),
            3,
            42,
            Some(headers),
        );
        let mut payloads = Payloads::default();
        let kept = Record::from_message(&message, Arc::from("t"), &mut payloads, true);
        assert_eq!(
            kept.headers,
            vec![
                ("trace".to_string(), Some(b"abc".to_vec())),
                ("empty".to_string(), None)
            ]
        );
        let left = Record::from_message(&message, Arc::from("t"), &mut payloads, false);
        assert!(left.headers.is_empty());
        assert_eq!((left.partition, left.offset), (3, 42));
        assert_eq!(left.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(left.value.as_deref(), Some(&b"{}"[..]));
    }

    #[test]
    fn large_payloads_get_their_own_allocation() {
        let mut payloads = Payloads::default();
        let large = vec![7u8; Payloads::CHUNK];
        assert_eq!(&payloads.copy(&large)[..], &large[..]);
        assert!(payloads.current.is_none());
    }

    #[test]
    fn raw_text_escapes_only_invalid_bytes() {
        assert_eq!(raw_text(Some(b"ok \xff\xfe \xc3\xa9")), "ok \\xFF\\xFE é");
        assert_eq!(raw_text(None), "");
    }
}
