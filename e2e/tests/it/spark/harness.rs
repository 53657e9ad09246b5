//! One local-mode Spark per test: `e2e/spark/harness.py` in the virtualenv that
//! scripts/install-deps.sh made, with the Delta and Kafka jars it copied. The test sends it
//! requests (one JSON object per line) and reads its answers with a deadline each; Spark's log
//! goes to a file whose end is shown whenever Spark fails, errs or is too slow.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long Spark may take to start (a cold JVM on a busy 2-core machine).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(240);

/// The e2e/spark directory of this checkout.
pub fn spark_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spark")
}

fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is set");
    PathBuf::from(home).join(".cache/tributary")
}

/// A `<name>x</name>` property of e2e/spark/pom.xml.
fn pom_property(pom: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = pom
        .find(&open)
        .unwrap_or_else(|| panic!("e2e/spark/pom.xml has no <{name}>"))
        + open.len();
    let end = pom[start..]
        .find('<')
        .unwrap_or_else(|| panic!("e2e/spark/pom.xml: <{name}> is not closed"));
    pom[start..start + end].trim().to_string()
}

/// The virtualenv's Python ($TRIBUTARY_SPARK_PYTHON to use another) and the jars folder
/// ($TRIBUTARY_SPARK_JARS), named by the versions in pom.xml as install-deps.sh names it.
fn installation() -> (PathBuf, PathBuf) {
    let python = std::env::var_os("TRIBUTARY_SPARK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("spark-venv/bin/python"));
    let jars = std::env::var_os("TRIBUTARY_SPARK_JARS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let pom = std::fs::read_to_string(spark_dir().join("pom.xml")).expect("read pom.xml");
            cache_dir().join(format!(
                "spark-jars-{}-delta-{}",
                pom_property(&pom, "spark.version"),
                pom_property(&pom, "delta.version")
            ))
        });
    assert!(
        python.is_file() && jars.join(".pom").is_file(),
        "Spark is not installed ({} or {} is missing): run scripts/install-deps.sh",
        python.display(),
        jars.display()
    );
    (python, jars)
}

/// A running Spark driver (Python and its JVM, in their own process group).
pub struct Spark {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
    log: PathBuf,
    started: Instant,
    /// Seconds from the process start to a usable session, once known.
    pub startup_seconds: Option<f64>,
}

impl Spark {
    /// Starts Spark in `dir` (its log, Derby and scratch space go there). Returns at once:
    /// [`Spark::wait_ready`] waits for the session, so a test can prepare its tables meanwhile.
    pub fn start(dir: &Path) -> Spark {
        let (python, jars) = installation();
        std::fs::create_dir_all(dir).expect("create the Spark directory");
        let log = dir.join("spark.log");
        let mut command = Command::new(python);
        command
            .arg(spark_dir().join("harness.py"))
            .current_dir(dir)
            .env("TRIBUTARY_SPARK_JARS", jars)
            .env("TRIBUTARY_SPARK_WORK_DIR", dir)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create spark.log"))
            // Its own group: the JVM is Python's child, and both are stopped together.
            .process_group(0);
        let mut child = command.spawn().expect("start Spark's Python driver");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, answers) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Spark {
            child,
            stdin,
            answers,
            log,
            started: Instant::now(),
            startup_seconds: None,
        }
    }

    /// Waits until the session is up; panics with Spark's log if it is not within the limit.
    pub fn wait_ready(&mut self) -> Value {
        let ready = self.answer("start-up", STARTUP_TIMEOUT);
        self.startup_seconds = Some(self.started.elapsed().as_secs_f64());
        eprintln!(
            "Spark {} ready in {:.1} s (session {} s)",
            ready["spark_version"],
            self.started.elapsed().as_secs_f64(),
            ready["startup_seconds"]
        );
        ready
    }

    /// Sends one request and returns its answer; panics with the error and Spark's log when
    /// Spark answers an error, exits or takes longer than `timeout`.
    pub fn request(&mut self, request: Value, timeout: Duration) -> Value {
        let what = format!(
            "{} {}",
            request["op"].as_str().unwrap_or("request"),
            request
                .get("name")
                .or(request.get("path"))
                .unwrap_or(&json!(""))
        );
        match self.try_request(request, timeout) {
            Ok(answer) => answer,
            Err(error) => panic!("Spark failed {what}: {error}\n{}", self.log_tail()),
        }
    }

    /// Like [`Spark::request`], but an error Spark answers (a query that failed) is returned
    /// as its text; Spark exiting or not answering in time still fails the test.
    pub fn try_request(&mut self, request: Value, timeout: Duration) -> Result<Value, String> {
        let what = request["op"].as_str().unwrap_or("request").to_string();
        let line = serde_json::to_string(&request).expect("request as JSON");
        if let Err(e) = writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()) {
            panic!("cannot send {what} to Spark: {e}\n{}", self.log_tail());
        }
        let answer = self.answer(&what, timeout);
        if answer["ok"] == json!(true) {
            Ok(answer)
        } else {
            Err(answer["error"]
                .as_str()
                .unwrap_or("(no error text)")
                .to_string())
        }
    }

    fn answer(&mut self, what: &str, timeout: Duration) -> Value {
        match self.answers.recv_timeout(timeout) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!(
                    "Spark answered {what} with {line:?}, not JSON ({e})\n{}",
                    self.log_tail()
                )
            }),
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                panic!(
                    "Spark did not answer {what} within {timeout:?}\n{}",
                    self.log_tail()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                panic!(
                    "Spark exited ({status:?}) before answering {what}\n{}",
                    self.log_tail()
                )
            }
        }
    }

    /// The Python driver's process id (the JVM is its child).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 8 KB of Spark's log, for failure messages.
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

impl Drop for Spark {
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
