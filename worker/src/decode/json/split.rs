//! Large batches decoded in parts: the first on the calling thread, the others on helper
//! threads that live as long as the decoder.
//!
//!   records (shared) -> part 0 here, parts 1.. on helpers -> the parts, in order
//!
//! The helpers are started with the first large batch and kept (`JobThread`), so no thread is
//! started per batch and each helper keeps its allocator heap from one batch to the next.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::{Decoded, RecordReader};
use crate::error::{Error, Result};
use crate::job_thread::JobThread;
use crate::record::Record;

/// The helpers of one decoder and how many parts a large batch is cut into.
pub(super) struct Split {
    /// Parts per large batch (the calling thread decodes one).
    parts: usize,
    /// Started with the first large batch; behind a lock so the decoder stays `Sync`.
    helpers: Mutex<Vec<Helper>>,
}

/// One helper thread: parts in, decoded parts out.
type Helper = JobThread<Part, Result<Decoded>>;

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
            let helper = start_helper(reader.clone(), helpers.len() + 1)?;
            helpers.push(helper);
        }
        // Every part handed out is waited for, even when another fails: a helper must not be
        // left holding a part of this batch when the next one comes.
        let handed: Vec<bool> = helpers
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
            let part = handed.then(|| helper.next_answer()).flatten();
            parts.push(part.unwrap_or_else(|| Err(stopped())));
        }
        parts.into_iter().collect()
    }
}

/// Starts helper `number`. A part's share of the records goes with the part, before its answer
/// (`JobThread`): once every part is back, the pipeline holds the only reference to the records
/// and can reuse their vector.
fn start_helper(reader: Arc<RecordReader>, number: usize) -> Result<Helper> {
    JobThread::start(
        format!("tributary-decode-{number}"),
        move |Part { records, range }: Part| {
            reader.decode_chunk(&records[range.clone()], range.start)
        },
    )
    .map_err(|e| Error::Decode(format!("cannot start a decode thread: {e}")))
}

/// Why a helper has no answer: it panicked.
fn stopped() -> Error {
    Error::Decode("a decode thread stopped (it panicked)".into())
}
