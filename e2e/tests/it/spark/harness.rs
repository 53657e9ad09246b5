//! One local-mode Spark per test: [`tributary_e2e::spark::Driver`], whose errors (with the end
//! of Spark's log) fail the test, except the query errors a test expects (`try_request`).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tributary_e2e::spark::{Driver, SparkError};

pub use tributary_e2e::spark::problems;

pub struct Spark {
    driver: Driver,
    /// Seconds from the process start to a usable session, once known.
    pub startup_seconds: Option<f64>,
}

impl Spark {
    /// Starts Spark in `dir`; [`Spark::wait_ready`] waits for its session.
    pub fn start(dir: &Path) -> Spark {
        let driver = Driver::start(dir).unwrap_or_else(|e| panic!("{e}"));
        Spark {
            driver,
            startup_seconds: None,
        }
    }

    /// Waits until the session is up; panics with Spark's log if it is not within the limit.
    pub fn wait_ready(&mut self) -> Value {
        let ready = self.driver.wait_ready().unwrap_or_else(|e| panic!("{e}"));
        self.startup_seconds = self.driver.startup_seconds;
        eprintln!(
            "Spark {} ready in {:.1} s (session {} s)",
            ready["spark_version"],
            self.startup_seconds.unwrap_or_default(),
            ready["startup_seconds"]
        );
        ready
    }

    /// One request and its answer; any failure fails the test with Spark's log (which the
    /// driver's other errors already quote).
    pub fn request(&mut self, request: Value, timeout: Duration) -> Value {
        match self.driver.request(request, timeout) {
            Ok(answer) => answer,
            Err(failed @ SparkError::Failed { .. }) => {
                panic!("{failed}\n{}", self.driver.log_tail())
            }
            Err(other) => panic!("{other}"),
        }
    }

    /// Like [`Spark::request`], but an error Spark answers (a query that failed) is returned
    /// as its text; Spark exiting or not answering in time still fails the test.
    pub fn try_request(&mut self, request: Value, timeout: Duration) -> Result<Value, String> {
        match self.driver.request(request, timeout) {
            Ok(answer) => Ok(answer),
            Err(SparkError::Failed { error, .. }) => Err(error),
            Err(other) => panic!("{other}"),
        }
    }

    /// The last 8 KB of Spark's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.driver.log_tail()
    }

    /// SIGKILL to Python and its JVM at once, as a crashed driver stops.
    pub fn kill(&mut self) {
        self.driver.kill();
    }
}
