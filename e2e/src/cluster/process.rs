//! A server process the harness started: its output goes to a log file (shown when something
//! fails), and it is stopped (SIGTERM, then SIGKILL) when dropped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::error::{ClusterError, Result};

/// A port on 127.0.0.1 that was free a moment ago (the OS picks it).
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(ClusterError::io("bind a free port"))?;
    let port = listener
        .local_addr()
        .map_err(ClusterError::io("read a free port"))?
        .port();
    Ok(port)
}

/// The last `max_bytes` of a log file, from a line start.
pub fn tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    match (start > 0, text.find('\n')) {
        (true, Some(newline)) => text[newline + 1..].to_string(),
        _ => text,
    }
}

/// Sends `signal` to the process group `pgid` (the harness starts every process as the leader
/// of its own group, so helpers it forks go too).
pub fn signal_group(pgid: u32, signal: libc::c_int) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is shared.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Makes the child die with the thread that starts it (the test's runtime threads live as long
/// as the test): a test killed by its time limit leaves no servers or workers behind.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and calls only prctl(2), which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub struct Process {
    name: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, command: &mut Command, log: PathBuf) -> Result<Self> {
        let out = File::create(&log).map_err(ClusterError::io(format!(
            "create log file {}",
            log.display()
        )))?;
        let err = out
            .try_clone()
            .map_err(ClusterError::io("duplicate a log file handle"))?;
        die_with_parent(command);
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(ClusterError::io(format!("start {name}")))?;
        Ok(Self {
            name: name.to_string(),
            log,
            child: Some(child),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last lines of the log.
    pub fn tail(&self) -> String {
        tail(&self.log, 6000)
    }

    /// An error if the process has exited, naming what the harness was waiting for.
    pub fn check_running(&mut self, doing: &str) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.exited("stopped", doing));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(&status.to_string(), doing)),
            Err(e) => Err(ClusterError::Io {
                what: format!("wait for {}", self.name),
                source: e,
            }),
        }
    }

    fn exited(&self, status: &str, doing: &str) -> ClusterError {
        ClusterError::Exited {
            name: self.name.clone(),
            status: status.to_string(),
            doing: doing.to_string(),
            log: self.log.clone(),
            tail: self.tail(),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the exit.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal_group(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                signal_group(child.id(), libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_group(child.id(), libc::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
