//! The allocator and how it gives memory back.
//!
//! Batches are decoded on short-lived threads and freed on another, so glibc's per-thread
//! arenas kept every batch's peak; mimalloc reuses it, but by default still keeps freed memory
//! committed for a while and commits whole arenas eagerly: an availableNow run then sits at
//! ~380 MiB resident. Purging at once and committing on demand keeps it at ~220 MiB at the same
//! speed (measured with the e2e bench, 1M readings).

use libmimalloc_sys::{mi_option_set, mi_option_t};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_e` (libmimalloc-sys 0.1.49 does
/// not name the v3 options); the test below checks the index against the documented default.
const ARENA_EAGER_COMMIT: mi_option_t = 4;
/// `mi_option_purge_delay`, likewise.
const PURGE_DELAY: mi_option_t = 15;

/// Sets the allocator's options, unless mimalloc's own environment variables
/// (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_EAGER_COMMIT`) set them; call first thing in main,
/// before other threads start (the option calls are not thread safe).
pub fn configure() {
    for (option, variable, value) in [
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 0),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: a plain option setter of the linked mimalloc, called before any other
            // thread runs.
            unsafe { mi_option_set(option, value) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libmimalloc_sys::mi_option_get;

    #[test]
    fn option_indexes_name_the_options_we_mean() {
        // mimalloc v3's options.c defaults purge_delay to 1000 ms and arena_eager_commit to 2
        // (on Linux): if a new libmimalloc-sys renumbers the options, these stop matching.
        // SAFETY: reading options; this test binary never calls configure().
        let (purge_delay, eager_commit) = unsafe {
            (
                mi_option_get(PURGE_DELAY),
                mi_option_get(ARENA_EAGER_COMMIT),
            )
        };
        assert_eq!(
            purge_delay, 1000,
            "mi_option_purge_delay is not option {PURGE_DELAY}"
        );
        assert_eq!(
            eager_commit, 2,
            "mi_option_arena_eager_commit is not option {ARENA_EAGER_COMMIT}"
        );
    }
}
