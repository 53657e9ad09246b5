//! A local-mode Spark driven over a pipe: `e2e/spark/harness.py` in the virtualenv that
//! scripts/install-deps.sh made, with the Delta and Kafka jars it copied.
//!
//! caller --(one JSON request per line)--> harness.py --(py4j)--> JVM (local[2])
//!        <--(one JSON answer per line)---
//!
//! Every wait has a deadline; Spark's log goes to a file whose end is quoted in every error, so a
//! failed, erring or slow Spark explains itself. Used by the Spark suites (e2e/tests/it/spark) and
//! by `bench --vs spark`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long Spark may take to start (a cold JVM on a busy 2-core machine).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(240);

/// What can go wrong driving Spark. Each message ends with the end of Spark's log where there is
/// one, since that is where the reason is.
#[derive(Debug, thiserror::Error)]
pub enum SparkError {
    #[error(
        "Spark is not installed ({missing} is missing): run scripts/install-deps.sh, or point \
         TRIBUTARY_SPARK_PYTHON and TRIBUTARY_SPARK_JARS at an installation"
    )]
    NotInstalled { missing: String },
    #[error("cannot read {path}: {source}")]
    ReadPom {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("e2e/spark/pom.xml has no <{0}> property")]
    PomProperty(String),
    #[error("cannot start Spark's Python driver in {dir}: {source}")]
    Start {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot send {what} to Spark: {source}\n{log}")]
    Send {
        what: String,
        source: std::io::Error,
        log: String,
    },
    #[error("Spark did not answer {what} within {timeout:?}\n{log}")]
    Timeout {
        what: String,
        timeout: Duration,
        log: String,
    },
    #[error("Spark exited ({status}) before answering {what}\n{log}")]
    Exited {
        what: String,
        status: String,
        log: String,
    },
    #[error("Spark answered {what} with {line:?}, which is not JSON\n{log}")]
    NotJson {
        what: String,
        line: String,
        log: String,
    },
    /// Spark ran the request and it failed (a query error, a missing table): its own words.
    #[error("Spark failed {what}: {error}")]
    Failed { what: String, error: String },
}

pub type Result<T> = std::result::Result<T, SparkError>;

/// The e2e/spark directory of this checkout (harness.py, pom.xml).
pub fn spark_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spark")
}

fn cache_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/tributary")
}

/// A `<name>x</name>` property of e2e/spark/pom.xml.
fn pom_property(pom: &str, name: &str) -> Result<String> {
    let open = format!("<{name}>");
    let start = pom
        .find(&open)
        .ok_or_else(|| SparkError::PomProperty(name.into()))?
        + open.len();
    let end = pom[start..]
        .find('<')
        .ok_or_else(|| SparkError::PomProperty(name.into()))?;
    Ok(pom[start..start + end].trim().to_string())
}

/// The Spark and Delta versions pom.xml pins, e.g. ("4.2.0", "4.4.0").
pub fn versions() -> Result<(String, String)> {
    let path = spark_dir().join("pom.xml");
    let pom = std::fs::read_to_string(&path).map_err(|source| SparkError::ReadPom {
        path: path.display().to_string(),
        source,
    })?;
    Ok((
        pom_property(&pom, "spark.version")?,
        pom_property(&pom, "delta.version")?,
    ))
}

/// The virtualenv's Python ($TRIBUTARY_SPARK_PYTHON to use another) and the jars folder
/// ($TRIBUTARY_SPARK_JARS), named by the versions in pom.xml as install-deps.sh names it.
fn installation() -> Result<(PathBuf, PathBuf)> {
    let python = std::env::var_os("TRIBUTARY_SPARK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("spark-venv/bin/python"));
    let jars = match std::env::var_os("TRIBUTARY_SPARK_JARS") {
        Some(jars) => PathBuf::from(jars),
        None => {
            let (spark, delta) = versions()?;
            cache_dir().join(format!("spark-jars-{spark}-delta-{delta}"))
        }
    };
    for needed in [python.clone(), jars.join(".pom")] {
        if !needed.is_file() {
            return Err(SparkError::NotInstalled {
                missing: needed.display().to_string(),
            });
        }
    }
    Ok((python, jars))
}

/// A running Spark driver: Python and its JVM, in their own process group, stopped together
/// when this is dropped.
pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
    log: PathBuf,
    started: Instant,
    /// Seconds from the process start to a usable session, once known.
    pub startup_seconds: Option<f64>,
}

impl Driver {
    /// Starts Spark in `dir` (its log, Derby and scratch space go there). Returns at once:
    /// [`Driver::wait_ready`] waits for the session, so a caller can prepare its tables
    /// meanwhile.
    pub fn start(dir: &Path) -> Result<Driver> {
        let (python, jars) = installation()?;
        let start_error = |source| SparkError::Start {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(start_error)?;
        let log = dir.join("spark.log");
        let log_file = std::fs::File::create(&log).map_err(start_error)?;
        let mut child = Command::new(python)
            .arg(spark_dir().join("harness.py"))
            .current_dir(dir)
            .env("TRIBUTARY_SPARK_JARS", jars)
            .env("TRIBUTARY_SPARK_WORK_DIR", dir)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            // Its own group: the JVM is Python's child, and both are stopped together.
            .process_group(0)
            .spawn()
            .map_err(start_error)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(start_error(std::io::Error::other("no pipes to the driver")));
        };
        let (sender, answers) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Driver {
            child,
            stdin,
            answers,
            log,
            started: Instant::now(),
            startup_seconds: None,
        })
    }

    /// Waits until the session is up, at most [`STARTUP_TIMEOUT`]; answers Spark's greeting
    /// (its version, the session's own start-up seconds).
    pub fn wait_ready(&mut self) -> Result<Value> {
        let ready = self.answer("start-up", STARTUP_TIMEOUT)?;
        self.startup_seconds = Some(self.started.elapsed().as_secs_f64());
        Ok(ready)
    }

    /// Sends one request and returns its answer. An error Spark answers (a query that failed)
    /// is [`SparkError::Failed`] with Spark's text; Spark exiting or not answering within
    /// `timeout` are their own variants, with Spark's log.
    pub fn request(&mut self, request: Value, timeout: Duration) -> Result<Value> {
        let what = format!(
            "{} {}",
            request["op"].as_str().unwrap_or("request"),
            request
                .get("name")
                .or(request.get("path"))
                .unwrap_or(&json!(""))
        );
        let line = request.to_string();
        if let Err(source) = writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()) {
            return Err(SparkError::Send {
                what,
                source,
                log: self.log_tail(),
            });
        }
        let answer = self.answer(&what, timeout)?;
        if answer["ok"] == json!(true) {
            Ok(answer)
        } else {
            Err(SparkError::Failed {
                what,
                error: answer["error"]
                    .as_str()
                    .unwrap_or("(no error text)")
                    .to_string(),
            })
        }
    }

    fn answer(&mut self, what: &str, timeout: Duration) -> Result<Value> {
        match self.answers.recv_timeout(timeout) {
            Ok(line) => serde_json::from_str(&line).map_err(|_| SparkError::NotJson {
                what: what.into(),
                line,
                log: self.log_tail(),
            }),
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                Err(SparkError::Timeout {
                    what: what.into(),
                    timeout,
                    log: self.log_tail(),
                })
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self
                    .child
                    .wait()
                    .map_or_else(|e| format!("unknown: {e}"), |s: ExitStatus| s.to_string());
                Err(SparkError::Exited {
                    what: what.into(),
                    status,
                    log: self.log_tail(),
                })
            }
        }
    }

    /// The Python driver's process id (the JVM is its child).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 8 KB of Spark's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut start = text.len().saturating_sub(8_000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        format!(
            "--- end of Spark's log ({}):\n{}",
            self.log.display(),
            &text[start..]
        )
    }

    /// SIGKILL to Python and its JVM at once, as a crashed driver stops.
    pub fn kill(&mut self) {
        // SAFETY: signals our own child's process group, created by process_group(0).
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The problems a check reported, each on its own line; empty when there are none.
pub fn problems(answer: &Value) -> Vec<String> {
    answer["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pom_properties_are_read_and_a_missing_one_is_named() {
        let pom = "<properties><spark.version> 4.2.0 </spark.version></properties>";
        assert_eq!(pom_property(pom, "spark.version").unwrap(), "4.2.0");
        let missing = pom_property(pom, "delta.version").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "e2e/spark/pom.xml has no <delta.version> property"
        );
    }

    #[test]
    fn the_checkout_pins_spark_and_delta_versions() {
        let (spark, delta) = versions().unwrap();
        assert!(spark.starts_with(char::is_numeric), "{spark}");
        assert!(delta.starts_with(char::is_numeric), "{delta}");
    }
}
