//! The worker under test: a `tributary-worker run -f` child process, its manifest, and what the
//! kernel says it cost (wait4: CPU time of exactly that child; /proc: its peak RSS).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tributary_crds::status::StreamingQueryProgress;

use super::config::{OnErrorMode, Shape};
use super::data;
use super::error::{BenchError, Result};
use super::procfs;

/// What the manifest of one run says.
pub struct Ingestion<'a> {
    pub name: &'a str,
    pub bootstrap: &'a str,
    pub topic: &'a str,
    pub table: &'a Path,
    pub checkpoint: &'a Path,
    /// availableNow (the throughput runs) or the default trigger (the latency run).
    pub available_now: bool,
    pub max_offsets_per_trigger: Option<u64>,
    /// librdkafka options passed through the manifest's `options` (tuning experiments).
    pub kafka_options: &'a [(String, String)],
    pub on_error: OnErrorMode,
    /// The dead-letter table (onError: deadLetter).
    pub dead_letter: Option<&'a Path>,
    pub shape: Shape,
}

/// The transform of `Shape::Transform`: a cast, a filter and a derived date column, as the
/// README's example (the kind of query the benchmark prices).
pub const TRANSFORM_SQL: &str = "SELECT device_id, site, CAST(temperature AS DECIMAL(5,2)) AS temperature_c, humidity, battery_pct, status, \"timestamp\", CAST(\"timestamp\" AS DATE) AS date, kafka_topic, kafka_partition, kafka_offset FROM input WHERE status <> 'low_battery'";

/// The status `TRANSFORM_SQL` filters out.
pub const FILTERED_STATUS: &str = "low_battery";

/// A JSON string is a valid YAML scalar: quoting paths this way needs no YAML library.
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

impl Ingestion<'_> {
    /// The StreamingIngestion manifest. The volumes are required by validation and ignored by a
    /// standalone worker, which writes to the plain local paths.
    pub fn manifest(&self) -> String {
        let max_offsets = self
            .max_offsets_per_trigger
            .map(|n| format!("      maxOffsetsPerTrigger: {n}\n"))
            .unwrap_or_default();
        let options = if self.kafka_options.is_empty() {
            String::new()
        } else {
            let entries: Vec<String> = self
                .kafka_options
                .iter()
                .map(|(k, v)| format!("{}: {}", quoted(k), quoted(v)))
                .collect();
            format!("      options: {{{}}}\n", entries.join(", "))
        };
        let dead_letter = self
            .dead_letter
            .map(|dir| {
                format!(
                    "      deadLetter: {{uri: {}}}\n",
                    quoted(&dir.display().to_string())
                )
            })
            .unwrap_or_default();
        let (transform, shape) = match self.shape {
            Shape::Append => (String::new(), String::new()),
            Shape::Transform => (
                format!("  transform: {{sql: {}}}\n", quoted(TRANSFORM_SQL)),
                "      partitionBy: [date]\n".to_string(),
            ),
            Shape::Update => (
                String::new(),
                "      outputMode: update\n      mergeKeys: [device_id]\n".to_string(),
            ),
        };
        let trigger = if self.available_now {
            "  trigger: {availableNow: true}\n"
        } else {
            ""
        };
        format!(
            "apiVersion: tributary.dev/v1alpha1
kind: StreamingIngestion
metadata:
  name: {name}
  namespace: bench
spec:
  source:
    kafka:
      bootstrapServers: {bootstrap}
      subscribe: [{topic}]
      startingOffsets: earliest
{max_offsets}{options}  format:
    json:
      schema:
{schema}      onError: {on_error}
{dead_letter}  metadataColumns: [topic, partition, offset]
{transform}  sink:
    delta:
      uri: {table}
{shape}      volume: {{claimName: bench}}
  checkpoint:
    location: {checkpoint}
    volume: {{claimName: bench}}
{trigger}",
            name = self.name,
            bootstrap = quoted(self.bootstrap),
            topic = quoted(self.topic),
            schema = data::schema_yaml(),
            on_error = self.on_error.as_str(),
            table = quoted(&self.table.display().to_string()),
            checkpoint = quoted(&self.checkpoint.display().to_string()),
        )
    }
}

/// A progress line the worker printed, with when it arrived.
#[derive(Clone, Debug)]
pub struct ProgressSeen {
    pub at: Duration,
    pub progress: StreamingQueryProgress,
}

/// What a finished worker cost.
#[derive(Clone, Debug)]
pub struct Finished {
    pub exit_code: i32,
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    pub max_rss_bytes: u64,
    /// Minor page faults (wait4's ru_minflt): pages the kernel handed the worker, most of
    /// them fresh and zeroed. A count, so it does not vary with the machine's load as CPU
    /// time does: what a change in how memory is reused shows first.
    pub minor_faults: u64,
    pub progress: Vec<ProgressSeen>,
}

pub struct Running {
    child: Child,
    pid: libc::pid_t,
    started: Instant,
    stdout: Option<JoinHandle<Vec<ProgressSeen>>>,
    log: PathBuf,
}

/// Starts `worker_bin run -f manifest`, under `wrapper` if any (e.g. a profiler: its own cost is
/// then counted too); stderr goes to `log`.
pub fn spawn(
    wrapper: &[String],
    worker_bin: &Path,
    manifest: &Path,
    bootstrap: &str,
    log: &Path,
) -> Result<Running> {
    let stderr = File::create(log).map_err(BenchError::io_path("create", log))?;
    let started = Instant::now();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(worker_bin);
            command
        }
        None => Command::new(worker_bin),
    };
    let mut child = command
        .arg("run")
        .arg("-f")
        .arg(manifest)
        .arg("--bootstrap-servers")
        .arg(bootstrap)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(BenchError::io_path("start the worker", worker_bin))?;
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| BenchError::Worker(format!("pid {} out of range", child.id())))?;
    let stdout = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            // Anything that is not a progress line is ignored: the contract is one JSON line per
            // micro-batch, other output is allowed.
            BufReader::new(out)
                .lines()
                .map_while(std::result::Result::ok)
                .filter_map(|line| serde_json::from_str::<StreamingQueryProgress>(&line).ok())
                .map(|progress| ProgressSeen {
                    at: started.elapsed(),
                    progress,
                })
                .collect()
        })
    });
    Ok(Running {
        child,
        pid,
        started,
        stdout,
        log: log.to_owned(),
    })
}

impl Running {
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the worker has exited, without reaping it (wait4 still gets its rusage later).
    pub fn has_exited(&self) -> bool {
        // SAFETY: siginfo_t is plain old data; waitid with WNOWAIT only peeks at our own child.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let id = libc::id_t::try_from(self.pid).unwrap_or(0);
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            libc::waitid(libc::P_PID, id, &mut info, flags) == 0 && info.si_pid() != 0
        }
    }

    /// SIGTERM: the worker finishes or abandons its batch and exits.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on the pid of our own child, which is not reaped yet.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
    }

    /// Waits for the exit, polling so the wall time is exact to ~5 ms and a hung worker is
    /// killed after `timeout`. wait4 gives that child's own CPU time; its peak RSS is the
    /// largest VmHWM read from /proc while it runs. (wait4's ru_maxrss is not the worker's: Linux
    /// carries the high-water mark of the image before exec over, and a child spawned from this
    /// process starts with this process's RSS, mock broker data included.)
    pub fn wait(mut self, timeout: Duration) -> Result<Finished> {
        // From this call, not from the spawn: a continuous run given SIGTERM after minutes
        // still gets the whole `timeout` to stop.
        let deadline = Instant::now() + timeout;
        let mut status: libc::c_int = 0;
        let mut peak_rss_bytes = 0;
        // SAFETY: rusage is plain old data; zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: valid pointers to locals; pid is our unreaped child.
            let reaped = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
            if reaped == self.pid {
                break;
            }
            if let Some(hwm) = procfs::peak_rss_bytes(self.pid.unsigned_abs()) {
                peak_rss_bytes = peak_rss_bytes.max(hwm);
            }
            if reaped < 0 {
                return Err(BenchError::io("wait for the worker")(
                    std::io::Error::last_os_error(),
                ));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                // SAFETY: as above, blocking this time.
                unsafe { libc::wait4(self.pid, &mut status, 0, &mut usage) };
                return Err(BenchError::Worker(format!(
                    "still running after {timeout:?}: killed; its log: {}\n{}",
                    self.log.display(),
                    tail(&self.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let wall_s = self.started.elapsed().as_secs_f64();
        let exit_code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        let progress = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok(Finished {
            exit_code,
            wall_s,
            user_s: seconds(usage.ru_utime),
            sys_s: seconds(usage.ru_stime),
            max_rss_bytes: peak_rss_bytes,
            minor_faults: u64::try_from(usage.ru_minflt).unwrap_or(0),
            progress,
        })
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// The last lines of the worker's log, for error messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The worker binary next to the bench binary (both land in the same target directory).
pub fn default_worker_bin() -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let dir = me.parent()?;
    // Integration tests run from target/<profile>/deps; the binaries are one level up.
    [
        dir.join("tributary-worker"),
        dir.parent()?.join("tributary-worker"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_timeout_counts_from_the_wait() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A "worker" that ends 1.5 s after it starts; the wait begins after 1.2 s with 1 s to
        // go, so it must not be counted from the spawn.
        let wrapper = ["sh", "-c", "sleep 1.5"].map(String::from);
        let running = spawn(
            &wrapper,
            Path::new("unused"),
            Path::new("unused.yaml"),
            "127.0.0.1:9",
            &dir.path().join("worker.log"),
        )
        .expect("spawned");
        std::thread::sleep(Duration::from_millis(1200));
        let finished = running
            .wait(Duration::from_secs(1))
            .expect("waited for it to end, not killed at once");
        assert_eq!(finished.exit_code, 0);
        assert!(finished.wall_s >= 1.5, "{}", finished.wall_s);
    }
}
