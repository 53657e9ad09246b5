//! A server process a test starts beside the code under test: on a free port of 127.0.0.1,
//! its output in a log file, killed with the test process, and waited for with a deadline.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How many ports a start tries (here and for Kafka's nodes): a port is free when picked but
/// may be taken before the server binds it.
pub(crate) const ATTEMPTS: usize = 3;

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `count` distinct free ports on 127.0.0.1 (all held open at once, then released).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// Starts `command(port)` on a free port and returns once something listens on
/// 127.0.0.1:`port`. Its stdout and stderr go to `log`; it dies with the test process. A server
/// that exits at once (its port taken meanwhile) is started again on another port; one that
/// does not listen within `startup` is killed. Either way the test fails with `what` and the log.
pub fn start_listening(
    what: &str,
    log: &Path,
    startup: Duration,
    mut command: impl FnMut(u16) -> Command,
) -> (Child, u16) {
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    for _ in 0..ATTEMPTS {
        let port = free_port();
        let output = std::fs::File::create(log).expect("create the server's log file");
        let mut command = command(port);
        command
            .stdin(Stdio::null())
            .stderr(output.try_clone().expect("the server's log file"))
            .stdout(output);
        // SAFETY: prctl is async-signal-safe; it makes the server die with the test process,
        // so a test killed by its time limit leaves no server behind.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let deadline = Instant::now() + startup;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return (child, port);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} did not listen on {port} within {startup:?}: {}",
                    log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("{what} did not start: {}", log_text());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(5);
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 5, "{ports:?}");
    }

    #[test]
    fn a_server_that_listens_is_returned_with_its_port() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let (mut child, port) = start_listening(
            "python's http.server",
            &log,
            Duration::from_secs(30),
            |port| {
                let mut command = Command::new("python3");
                command.args([
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    &port.to_string(),
                ]);
                command
            },
        );
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    #[should_panic(expected = "did not start: no such thing")]
    fn a_server_that_exits_fails_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        start_listening("a server that exits", &log, Duration::from_secs(5), |_| {
            let mut command = Command::new("sh");
            command.args(["-c", "echo no such thing; exit 1"]);
            command
        });
    }
}
