//! The batch stage: which offsets the next micro-batch covers, when its read stops, the records
//! read ahead for later batches, and when batches start and the run ends (the trigger).

mod min_offsets;
mod plan;
mod read_ahead;
mod read_limits;
mod trigger;

pub use min_offsets::MinOffsets;
pub use plan::{Placement, Plan, plan_batch};
pub use read_ahead::{ReadAhead, ReadAheadState, TopicNames};
pub use read_limits::{POLL_BURST, ReadLimits};
pub use trigger::{BatchOutcome, Next, Schedule};
