//! What a running process (or a process tree) costs, read from /proc: CPU seconds and the peak
//! resident set. For processes the benchmark did not start itself as a direct child (the Kafka
//! JVM, Spark's Python driver and its JVM) wait4's rusage is not available.

/// User + system CPU seconds of a process so far, from /proc (0 when it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / per_second
}

/// VmHWM of a running process (the peak resident set of its current image), in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A process and all its descendants alive now, the root first.
pub fn tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    let mut index = 0;
    while let Some(&parent) = pids.get(index) {
        // Each thread lists the children it forked itself, so every thread is asked.
        let threads = std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten()
            .filter_map(|thread| thread.ok());
        for thread in threads {
            let children =
                std::fs::read_to_string(thread.path().join("children")).unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        index += 1;
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_a_peak_and_a_tree_with_its_child() {
        let burn = std::time::Instant::now();
        while burn.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(burn.elapsed());
        }
        let me = std::process::id();
        assert!(cpu_seconds(me) > 0.0);
        assert!(peak_rss_bytes(me).is_some_and(|b| b > 1024 * 1024));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pids = tree(me);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(pids[0], me);
        assert!(pids.contains(&child.id()), "{pids:?}");
    }

    #[test]
    fn a_process_that_is_gone_costs_nothing() {
        assert_eq!(cpu_seconds(u32::MAX), 0.0);
        assert_eq!(peak_rss_bytes(u32::MAX), None);
        assert_eq!(tree(u32::MAX), vec![u32::MAX]);
    }
}
