//! Large batches decoded in parts: the first on the calling thread, the others on helper
//! threads that live as long as the decoder.
//!
//!   records (shared) -> part 0 here, parts 1.. on helpers -> the parts, in order
//!
//! The helpers are started with the first large batch and kept, so no thread is started per
//! batch and each helper keeps its allocator heap from one batch to the next: a thread started
//! per batch began every batch with an empty heap, whose pages came fresh from the kernel.

use std::ops::Range;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{Decoded, RecordReader};
use crate::error::{Error, Result};
use crate::record::Record;

/// The helpers of one decoder and how many parts a large batch is cut into.
pub(super) struct Split {
    /// Parts per large batch (the calling thread decodes one).
    parts: usize,
    /// Started with the first large batch; behind a lock so the decoder stays `Sync`.
    helpers: Mutex<Vec<Helper>>,
}

/// One helper thread: parts go in, decoded parts come out, one for one.
struct Helper {
    parts: Option<Sender<Part>>,
    decoded: Receiver<Result<Decoded>>,
    thread: Option<JoinHandle<()>>,
}

/// A range of a batch's records for a helper to decode.
struct Part {
    records: Arc<Vec<Record>>,
    range: Range<usize>,
}

impl Split {
    pub fn new(parts: usize) -> Split {
        Split {
            parts: parts.max(1),
            helpers: Mutex::new(Vec::new()),
        }
    }

    /// Decodes `records` in parts; the parts come back in the records' order.
    pub fn decode(
        &self,
        reader: &Arc<RecordReader>,
        records: &Arc<Vec<Record>>,
    ) -> Result<Vec<Decoded>> {
        let size = records.len().div_ceil(self.parts).max(1);
        let ranges: Vec<Range<usize>> = (0..records.len())
            .step_by(size)
            .map(|start| start..(start + size).min(records.len()))
            .collect();
        let Some((first, rest)) = ranges.split_first() else {
            return Ok(Vec::new());
        };
        let mut helpers = self
            .helpers
            .lock()
            .map_err(|_| Error::Decode("a decode thread stopped while decoding".into()))?;
        while helpers.len() < rest.len() {
            let helper = Helper::start(reader.clone(), helpers.len() + 1)?;
            helpers.push(helper);
        }
        // Every part handed out is waited for, even when another fails: a helper must not be
        // left holding a part of this batch when the next one comes.
        let handed: Vec<Result<()>> = helpers
            .iter()
            .zip(rest)
            .map(|(helper, range)| {
                helper.hand(Part {
                    records: records.clone(),
                    range: range.clone(),
                })
            })
            .collect();
        let mut parts = vec![reader.decode_chunk(&records[first.clone()], first.start)];
        for (helper, handed) in helpers.iter().zip(handed) {
            parts.push(handed.and_then(|()| helper.receive()));
        }
        parts.into_iter().collect()
    }
}

impl Helper {
    fn start(reader: Arc<RecordReader>, number: usize) -> Result<Helper> {
        let (parts, inbox) = mpsc::channel::<Part>();
        let (outbox, decoded) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("tributary-decode-{number}"))
            .spawn(move || {
                for Part { records, range } in inbox {
                    let part = reader.decode_chunk(&records[range.clone()], range.start);
                    // Let go of the batch before answering: once every part is back, the
                    // pipeline holds the only reference to its records and can reuse them.
                    drop(records);
                    if outbox.send(part).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Decode(format!("cannot start a decode thread: {e}")))?;
        Ok(Helper {
            parts: Some(parts),
            decoded,
            thread: Some(thread),
        })
    }

    fn hand(&self, part: Part) -> Result<()> {
        self.parts
            .as_ref()
            .and_then(|parts| parts.send(part).ok())
            .ok_or_else(|| Error::Decode("a decode thread stopped (it panicked)".into()))
    }

    fn receive(&self) -> Result<Decoded> {
        self.decoded
            .recv()
            .map_err(|_| Error::Decode("a decode thread stopped (it panicked)".into()))?
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing its inbox ends the thread's loop.
        self.parts.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
