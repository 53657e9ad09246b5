//! The allocator and how it gives memory back.
//!
//! Batches are decoded on short-lived threads and freed on another, so glibc's per-thread
//! arenas kept every batch's peak; mimalloc reuses it, but by default still keeps freed memory
//! committed for a while and commits whole arenas eagerly: an availableNow run then sits at
//! ~380 MiB resident. Purging at once and committing on demand keeps it at ~220 MiB at the same
//! speed (measured with the e2e bench, 1M readings).
//!
//! Transparent huge pages are turned off for the process: mimalloc advises its arenas
//! `MADV_HUGEPAGE`, so on a kernel whose THP mode is `madvise` (most distributions) or
//! `always`, every first touch of an arena's 2 MiB range faults in and zeroes a whole huge page,
//! and purging 64 KiB of one gives nothing back. Without them an availableNow run of 1M readings
//! peaks at 128-132 MiB instead of 180-203 MiB, at the same CPU and speed (README,
//! Performance).

use libmimalloc_sys::{mi_option_set, mi_option_t};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc v3's `mi_option_e` (libmimalloc-sys 0.1.49 does
/// not name the v3 options); the test below checks the index against the documented default.
const ARENA_EAGER_COMMIT: mi_option_t = 4;
/// `mi_option_purge_delay`, likewise.
const PURGE_DELAY: mi_option_t = 15;
/// `mi_option_allow_thp`, likewise.
const ALLOW_THP: mi_option_t = 43;

/// Sets the allocator's options, unless mimalloc's own environment variables
/// (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_EAGER_COMMIT`, `MIMALLOC_ALLOW_THP`) set them; call
/// first thing in main, before other threads start (the option calls are not thread safe).
pub fn configure() {
    for (option, variable, value) in [
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT", 0),
        (ALLOW_THP, "MIMALLOC_ALLOW_THP", 0),
    ] {
        if std::env::var_os(variable).is_some() {
            continue;
        }
        // SAFETY: a plain option setter of the linked mimalloc, called before any other
        // thread runs.
        unsafe { mi_option_set(option, value) };
        if option == ALLOW_THP {
            // mimalloc reads MIMALLOC_ALLOW_THP as the process loads and disables THP for the
            // process only then; by main its first arena is advised already, so the worker
            // asks the kernel itself.
            disable_transparent_huge_pages();
        }
    }
}

/// Asks the kernel for no transparent huge pages in this process, advised or not. A refusal
/// (a kernel without the prctl) leaves them on: more memory, not an error.
fn disable_transparent_huge_pages() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
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
        let (purge_delay, eager_commit, allow_thp) = unsafe {
            (
                mi_option_get(PURGE_DELAY),
                mi_option_get(ARENA_EAGER_COMMIT),
                mi_option_get(ALLOW_THP),
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
        assert_eq!(
            allow_thp, 1,
            "mi_option_allow_thp is not option {ALLOW_THP}"
        );
    }

    #[test]
    fn huge_pages_end_up_disabled_for_the_process() {
        // Harmless to the other tests sharing the process: only their pages get smaller.
        disable_transparent_huge_pages();
        // SAFETY: prctl with integer arguments only.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }
}
