//! Apache Kafka brokers (KRaft, each node a combined broker and controller) from the jars
//! `scripts/install-deps.sh` copies into `$HOME/.cache/tributary/kafka-<version>/` (or
//! `$TRIBUTARY_KAFKA_DIR`).
//!
//! Each [`Kafka`] owns its nodes: free ports on 127.0.0.1, a fresh log directory in a temporary
//! directory, a bounded start-up wait (metadata polled until every node is registered), the
//! nodes' logs printed when start-up fails or the caller panics, and every node killed when the
//! value is dropped (and, through `PR_SET_PDEATHSIG`, when the calling process dies). A node can
//! be stopped, killed and started again on its log directory. One listener speaks plain Kafka;
//! an optional SASL_SSL listener requires SASL PLAIN users and serves a certificate from a test
//! CA made with the openssl CLI, as Event Hubs' Kafka endpoint does.
//!
//! nextest runs every test in its own process, so a broker cannot be shared between tests
//! without a process that outlives them; each test starts its own (about 3 to 5 s, see
//! README). Storage is formatted once per node id (one fixed cluster id) into a cache next to the
//! jars and copied for each broker: a formatted KRaft log directory does not depend on ports, and
//! copying saves the second JVM start that `kafka-storage format` costs.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::server::{ATTEMPTS, free_ports};

/// The Kafka release the tests run: the one `scripts/kafka/pom.xml` installs.
pub fn version() -> &'static str {
    const POM: &str = include_str!("../../scripts/kafka/pom.xml");
    POM.split("<kafka.version>")
        .nth(1)
        .and_then(|rest| rest.split("</kafka.version>").next())
        .expect("scripts/kafka/pom.xml names <kafka.version>")
}

/// Where the broker's jars are.
pub fn jars() -> PathBuf {
    let dir = match std::env::var_os("TRIBUTARY_KAFKA_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => cache_root().join(format!("kafka-{}", version())),
    };
    assert!(
        dir.join(format!("kafka_2.13-{}.jar", version())).is_file(),
        "Apache Kafka {} is not installed in {}: run scripts/install-deps.sh",
        version(),
        dir.display()
    );
    dir
}

fn cache_root() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is set");
    PathBuf::from(home).join(".cache").join("tributary")
}

/// How long a cluster may take to start before the test fails with its logs.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// What Kafka's log says when a listener's port is taken (java.net.BindException).
const PORT_TAKEN: &str = "Address already in use";

/// Why a cluster did not come up.
enum StartFailure {
    /// The node exited because a port picked for it was taken meanwhile.
    PortTaken(i32),
    /// The node exited for another reason.
    Exited(i32),
    /// Fewer than this many brokers registered within [`START_TIMEOUT`].
    TimedOut(usize),
}

impl StartFailure {
    fn describe(&self) -> String {
        match self {
            StartFailure::PortTaken(id) => {
                format!("Kafka node {id} exited during start-up: a port of its was taken")
            }
            StartFailure::Exited(id) => format!("Kafka node {id} exited during start-up"),
            StartFailure::TimedOut(expected) => format!(
                "Kafka did not start within {START_TIMEOUT:?} ({expected} brokers expected)"
            ),
        }
    }
}

/// A SASL_SSL listener: SASL PLAIN with these users, TLS with a certificate for `san` signed by
/// a CA made for this broker.
#[derive(Clone)]
pub struct SaslConfig {
    /// (user, password); passwords hold no `"` or `\` (they go into a JAAS string).
    pub users: Vec<(String, String)>,
    /// The server certificate's subject alternative names, e.g. `DNS:localhost,IP:127.0.0.1`.
    pub san: String,
}

/// What to start.
#[derive(Clone)]
pub struct KafkaConfig {
    pub nodes: usize,
    pub sasl: Option<SaslConfig>,
    /// Extra `server.properties` lines for every node.
    pub properties: Vec<(String, String)>,
    /// JVM options after the defaults (the last of a repeated option wins), e.g. a larger heap
    /// and the optimising JIT for a benchmark: the defaults start small and fast for tests.
    pub jvm_options: Vec<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            nodes: 1,
            sasl: None,
            properties: Vec::new(),
            jvm_options: Vec::new(),
        }
    }
}

struct Node {
    id: i32,
    port: u16,
    controller_port: u16,
    sasl_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn log_path(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    fn properties(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    fn running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }
}

/// A Kafka cluster on 127.0.0.1 that lives as long as this value.
pub struct Kafka {
    /// The plain listeners of every node.
    pub bootstrap: String,
    /// The SASL_SSL listeners of every node, when configured.
    pub sasl_bootstrap: Option<String>,
    /// The CA that signed the SASL_SSL listener's certificate (PEM).
    pub ca: Option<PathBuf>,
    config: KafkaConfig,
    nodes: Vec<Node>,
    producer: ThreadedProducer<DefaultProducerContext>,
    admin: AdminClient<DefaultClientContext>,
    dir: tempfile::TempDir,
}

impl Kafka {
    /// One node, a plain listener.
    pub fn start() -> Kafka {
        Self::start_with(KafkaConfig::default())
    }

    /// `nodes` nodes (each a broker and a controller voter); topics get replication factor
    /// `min(nodes, 3)`.
    pub fn cluster(nodes: usize) -> Kafka {
        Self::start_with(KafkaConfig {
            nodes,
            ..KafkaConfig::default()
        })
    }

    /// Starts the nodes on free ports. A port is free when picked but may be taken by another
    /// process before the node binds it; a start that loses a port that way is tried again on
    /// other ports (up to [`ATTEMPTS`] times), any other failure fails the test.
    pub fn start_with(config: KafkaConfig) -> Kafka {
        Self::start_on(config, free_ports)
    }

    /// [`Kafka::start_with`] on the ports `pick(count)` gives for each attempt.
    fn start_on(config: KafkaConfig, mut pick: impl FnMut(usize) -> Vec<u16>) -> Kafka {
        let started = Instant::now();
        let jars = jars();
        for attempt in 1..=ATTEMPTS {
            let mut kafka = Self::launch(config.clone(), &jars, &mut pick);
            match kafka.wait_until_up(kafka.nodes.len()) {
                Ok(()) => {
                    eprintln!(
                        "Apache Kafka {} ({} node(s)) up at {} in {} ms",
                        version(),
                        kafka.nodes.len(),
                        kafka.bootstrap,
                        started.elapsed().as_millis()
                    );
                    return kafka;
                }
                Err(StartFailure::PortTaken(id)) if attempt < ATTEMPTS => {
                    eprintln!(
                        "Kafka node {id} could not bind its port (taken since it was picked); \
                         starting again on other ports"
                    );
                }
                Err(failure) => panic!("{}\n{}", failure.describe(), kafka.logs()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Writes the nodes' configuration on fresh free ports and spawns them.
    fn launch(config: KafkaConfig, jars: &Path, pick: &mut impl FnMut(usize) -> Vec<u16>) -> Kafka {
        let dir = tempfile::Builder::new()
            .prefix("kafka-")
            .tempdir()
            .expect("broker tempdir");
        let per_node = 2 + usize::from(config.sasl.is_some());
        let ports = pick(config.nodes * per_node);
        let mut nodes: Vec<Node> = (0..config.nodes)
            .map(|i| {
                let ports = &ports[i * per_node..(i + 1) * per_node];
                let node_dir = dir.path().join(format!("node-{}", i + 1));
                std::fs::create_dir_all(&node_dir).expect("node dir");
                Node {
                    id: i as i32 + 1,
                    port: ports[0],
                    controller_port: ports[1],
                    sasl_port: ports.get(2).copied(),
                    dir: node_dir,
                    child: None,
                }
            })
            .collect();
        let ca = config.sasl.as_ref().map(|sasl| {
            let certs = certificates(&dir.path().join("tls"), &sasl.san);
            // Kafka's PEM key store: the (unencrypted PKCS#8) key, then the certificate chain.
            let key = std::fs::read_to_string(&certs.server_key).expect("server key");
            let chain = std::fs::read_to_string(&certs.server_chain).expect("server chain");
            std::fs::write(dir.path().join("tls").join("keystore.pem"), key + &chain)
                .expect("write the key store");
            certs.ca
        });
        std::fs::write(dir.path().join("log4j2.properties"), LOG4J2).expect("log4j2.properties");
        let voters = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        for node in &nodes {
            let text = server_properties(node, &config, &voters, dir.path());
            std::fs::write(node.properties(), text).expect("write server.properties");
            copy_dir(&formatted_template(jars, node.id), &node.dir.join("data"));
        }
        let join = |f: fn(&Node) -> Option<u16>| {
            nodes
                .iter()
                .filter_map(|n| f(n).map(|p| format!("127.0.0.1:{p}")))
                .collect::<Vec<_>>()
                .join(",")
        };
        let bootstrap = join(|n| Some(n.port));
        let sasl_bootstrap = config.sasl.as_ref().map(|_| join(|n| n.sasl_port));
        for node in &mut nodes {
            spawn(node, jars, dir.path(), &config.jvm_options);
        }
        Kafka {
            producer: producer(&bootstrap),
            admin: ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .expect("admin client"),
            bootstrap,
            sasl_bootstrap,
            ca,
            config,
            nodes,
            dir,
        }
    }

    /// Waits until `expected` brokers are registered (as metadata lists them); fails after
    /// [`START_TIMEOUT`] or when a node exits.
    fn wait_until_up(&mut self, expected: usize) -> Result<(), StartFailure> {
        let deadline = Instant::now() + START_TIMEOUT;
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "200")
            .create()
            .expect("metadata client");
        loop {
            let exited = self
                .nodes
                .iter_mut()
                .find_map(|n| (n.child.is_some() && !n.running()).then_some(n.id));
            if let Some(id) = exited {
                let log = std::fs::read_to_string(self.node_mut(id).log_path()).unwrap_or_default();
                return Err(if log.contains(PORT_TAKEN) {
                    StartFailure::PortTaken(id)
                } else {
                    StartFailure::Exited(id)
                });
            }
            if let Ok(metadata) = client.fetch_metadata(None, Duration::from_millis(500))
                && metadata.brokers().len() >= expected
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartFailure::TimedOut(expected));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `expected` brokers are registered, failing the test with the nodes' logs
    /// otherwise (a restart keeps its ports: there is nothing to try again).
    fn expect_up(&mut self, expected: usize) {
        if let Err(failure) = self.wait_until_up(expected) {
            panic!("{}\n{}", failure.describe(), self.logs());
        }
    }

    /// The last lines of every node's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(node.log_path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            let _ = writeln!(
                out,
                "--- Kafka node {} log ({}), last {} lines:\n{}",
                node.id,
                node.log_path().display(),
                tail.len(),
                tail.join("\n")
            );
        }
        out
    }

    /// Creates a topic (replication factor min(nodes, 3)) and waits until every partition has a
    /// leader.
    pub fn topic(&self, name: &str, partitions: i32) {
        self.topic_with(name, partitions, &[]);
    }

    /// Creates a topic with topic configs, e.g. `("cleanup.policy", "compact")`.
    pub fn topic_with(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let replication = self.nodes.len().min(3) as i32;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        for (key, value) in configs {
            topic = topic.set(key, value);
        }
        let results = futures::executor::block_on(
            self.admin
                .create_topics([&topic], &admin_options(Duration::from_secs(30))),
        )
        .expect("create topics");
        for result in results {
            if let Err((topic, code)) = result {
                panic!("cannot create topic {topic}: {code:?}");
            }
        }
        self.wait_for_partitions(name, partitions);
    }

    /// Waits until metadata shows `partitions` partitions of `topic`, each with a leader.
    fn wait_for_partitions(&self, topic: &str, partitions: i32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = self.metadata_client();
        loop {
            if let Ok(metadata) = client.fetch_metadata(Some(topic), Duration::from_secs(2))
                && let Some(t) = metadata.topics().first()
                && t.error().is_none()
                && t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic} has no leader for each of its {partitions} partitions\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metadata_client(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("metadata client")
    }

    /// Grows `topic` to `total` partitions.
    pub fn add_partitions(&self, topic: &str, total: usize) {
        let results = futures::executor::block_on(self.admin.create_partitions(
            [&NewPartitions::new(topic, total)],
            &admin_options(Duration::from_secs(30)),
        ))
        .expect("create partitions");
        for result in results {
            if let Err((topic, code)) = result {
                panic!("cannot add partitions to {topic}: {code:?}");
            }
        }
        self.wait_for_partitions(topic, total as i32);
    }

    pub fn delete_topic(&self, topic: &str) {
        let results = futures::executor::block_on(
            self.admin
                .delete_topics(&[topic], &admin_options(Duration::from_secs(30))),
        )
        .expect("delete topics");
        for result in results {
            if let Err((topic, code)) = result {
                panic!("cannot delete topic {topic}: {code:?}");
            }
        }
    }

    /// Deletes the records of `topic`-`partition` below `before` (Kafka's DeleteRecords); returns
    /// the new low watermark.
    pub fn delete_records(&self, topic: &str, partition: i32, before: i64) -> i64 {
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(topic, partition, rdkafka::Offset::Offset(before))
            .expect("offset");
        let result = futures::executor::block_on(
            self.admin
                .delete_records(&offsets, &admin_options(Duration::from_secs(30))),
        )
        .expect("delete records");
        let entry = result
            .find_partition(topic, partition)
            .expect("the partition in the result");
        if let Err(error) = entry.error() {
            panic!("cannot delete records of {topic}-{partition}: {error}");
        }
        match entry.offset() {
            rdkafka::Offset::Offset(low) => low,
            other => panic!("delete records returned {other:?}"),
        }
    }

    /// (low, high) watermarks of a partition: the high one is the end of the log (open
    /// transactions and markers included), not the last stable offset.
    pub fn watermarks(&self, topic: &str, partition: i32) -> (i64, i64) {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("isolation.level", "read_uncommitted")
            .create()
            .expect("watermark client");
        client
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .expect("watermarks")
    }

    /// The node id leading `topic`-`partition`.
    pub fn leader(&self, topic: &str, partition: i32) -> i32 {
        let metadata = self
            .metadata_client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        metadata
            .topics()
            .first()
            .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
            .map(|p| p.leader())
            .expect("the partition's leader")
    }

    /// Produces to an explicit partition; offsets follow the order of sends.
    pub fn send(&self, topic: &str, partition: i32, key: Option<&[u8]>, value: &[u8]) {
        send(&self.producer, topic, partition, key, value);
    }

    pub fn flush(&self) {
        self.producer
            .flush(Duration::from_secs(60))
            .expect("flush the producer");
    }

    fn node_mut(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no Kafka node {id}"))
    }

    /// Kills node `id` with SIGKILL, as a crashed machine stops.
    pub fn kill(&mut self, id: i32) {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `id` cleanly (SIGTERM: controlled shutdown, logs flushed), at most 60 s.
    pub fn stop(&mut self, id: i32) {
        let node = self.node_mut(id);
        let Some(mut child) = node.child.take() else {
            return;
        };
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.wait();
    }

    /// Starts node `id` again on its log directory and ports, and waits until every running
    /// node is registered again.
    pub fn restart(&mut self, id: i32) {
        let jars = jars();
        let root = self.dir.path().to_path_buf();
        let jvm_options = self.config.jvm_options.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} is running");
        spawn(node, &jars, &root, &jvm_options);
        let running = self.nodes.iter_mut().filter(|n| n.child.is_some()).count();
        self.expect_up(running);
    }

    /// The process ids of the running nodes (for their CPU time in /proc).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Node ids.
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Replaces the SASL PLAIN users of every node (each restarted on its log directory): a
    /// user removed, or a password changed, is refused from then on. Open connections drop with
    /// the restart, so clients must log in again.
    pub fn set_sasl_users(&mut self, users: Vec<(String, String)>) {
        let sasl = self.config.sasl.as_mut().expect("a SASL_SSL listener");
        sasl.users = users;
        let voters = self
            .nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        for id in self.node_ids() {
            self.stop(id);
        }
        for node in &self.nodes {
            let text = server_properties(node, &self.config, &voters, self.dir.path());
            std::fs::write(node.properties(), text).expect("write server.properties");
        }
        let jars = jars();
        let root = self.dir.path().to_path_buf();
        for node in &mut self.nodes {
            spawn(node, &jars, &root, &self.config.jvm_options);
        }
        let n = self.nodes.len();
        self.expect_up(n);
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::env::var_os("TRIBUTARY_KEEP_TEST_DIRS").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!("Kafka directory kept: {}", kept.keep().display());
        }
    }
}

fn admin_options(timeout: Duration) -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout))
}

/// Broker logging: INFO, less the configuration dumps; one line per event.
const LOG4J2: &str = "\
rootLogger.level=INFO
rootLogger.appenderRef.out.ref=out
appender.out.type=Console
appender.out.name=out
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d{HH:mm:ss.SSS}] %p %m (%c)%n
logger.config.name=org.apache.kafka.common.config.AbstractConfig
logger.config.level=WARN
logger.state.name=state.change.logger
logger.state.level=WARN
logger.appinfo.name=org.apache.kafka.common.utils.internals.AppInfoParser
logger.appinfo.level=WARN
";

fn server_properties(node: &Node, config: &KafkaConfig, voters: &str, root: &Path) -> String {
    let n = config.nodes;
    let replication = n.min(3);
    let min_isr = if replication >= 3 { 2 } else { 1 };
    let mut listeners = format!(
        "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
        node.port, node.controller_port
    );
    let mut advertised = format!("PLAINTEXT://127.0.0.1:{}", node.port);
    if let Some(port) = node.sasl_port {
        let _ = write!(listeners, ",SASL_SSL://127.0.0.1:{port}");
        let _ = write!(advertised, ",SASL_SSL://127.0.0.1:{port}");
    }
    let mut text = format!(
        "process.roles=broker,controller
node.id={id}
controller.quorum.voters={voters}
listeners={listeners}
advertised.listeners={advertised}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs={data}
num.partitions=1
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=4
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
log.cleaner.threads=1
log.cleaner.backoff.ms=500
log.cleaner.dedupe.buffer.size=4194304
log.retention.check.interval.ms=1000
log.initial.task.delay.ms=0
",
        id = node.id,
        data = node.dir.join("data").display(),
    );
    if let Some(sasl) = &config.sasl {
        let mut jaas =
            String::from("org.apache.kafka.common.security.plain.PlainLoginModule required");
        for (user, password) in &sasl.users {
            assert!(
                !password.contains(['"', '\\']) && !user.contains(['"', '\\', ' ', '=']),
                "a SASL user or password the JAAS string cannot hold: {user}"
            );
            let _ = write!(jaas, " user_{user}=\"{password}\"");
        }
        jaas.push(';');
        let _ = write!(
            text,
            "sasl.enabled.mechanisms=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config={jaas}
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
",
            keystore = root.join("tls").join("keystore.pem").display()
        );
    }
    for (key, value) in &config.properties {
        let _ = writeln!(text, "{key}={value}");
    }
    text
}

/// Starts a node's JVM, its output appended to its log.
fn spawn(node: &mut Node, jars: &Path, root: &Path, jvm_options: &[String]) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.log_path())
        .expect("broker log");
    let mut command = Command::new("java");
    command
        .args([
            // Small and quick to start: the tests' brokers hold little data.
            "-Xms64m",
            "-Xmx384m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
        ])
        .args(jvm_options)
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            root.join("log4j2.properties").display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", jars.display()))
        .arg("kafka.Kafka")
        .arg(node.properties())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; it makes the broker die with the test process, so a
    // test killed by its time limit leaves no JVM behind.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    node.child = Some(command.spawn().unwrap_or_else(|e| {
        panic!("cannot start java ({e}): run scripts/install-deps.sh (OpenJDK 17)")
    }));
}

/// A log directory formatted for node `id` (KRaft `format`), made once and kept next to the
/// jars; its content does not depend on ports, so each broker starts from a copy.
fn formatted_template(jars: &Path, id: i32) -> PathBuf {
    let root = cache_root().join(format!("kafka-{}-storage", version()));
    let template = root.join(format!("node-{id}"));
    if template.join("meta.properties").is_file() {
        return template;
    }
    std::fs::create_dir_all(&root).expect("template root");
    let work = root.join(format!(".tmp-{}-{id}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("template work dir");
    let properties = work.join("format.properties");
    let ports = free_ports(2);
    let (port, controller) = (ports[0], ports[1]);
    std::fs::write(
        &properties,
        format!(
            "process.roles=broker,controller\nnode.id={id}\n\
             controller.quorum.voters={id}@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             controller.listener.names=CONTROLLER\nlog.dirs={}\n",
            work.join("data").display()
        ),
    )
    .expect("format.properties");
    let output = Command::new("java")
        .args([
            "-Xmx128m",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-cp",
        ])
        .arg(format!("{}/*", jars.display()))
        .args(["kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c"])
        .arg(&properties)
        .output()
        .expect("run kafka.tools.StorageTool");
    assert!(
        output.status.success(),
        "kafka.tools.StorageTool format failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Another test process may have made it meanwhile: either copy is good.
    if std::fs::rename(work.join("data"), &template).is_err() {
        assert!(
            template.join("meta.properties").is_file(),
            "cannot store the formatted template in {}",
            template.display()
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    template
}

/// The cluster id of every formatted template: the nodes of one cluster must share it, and
/// separate clusters on separate ports need not differ. 16 bytes, URL-safe base64.
const CLUSTER_ID: &str = "dHJpYnV0YXJ5LXRlc3Qtaw";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// The test CA and a server certificate it signed.
pub struct Certificates {
    pub ca: PathBuf,
    pub server_chain: PathBuf,
    pub server_key: PathBuf,
}

/// Generates a CA and a server certificate for `san` (e.g. `DNS:localhost,IP:127.0.0.1`) in
/// `dir` with the openssl CLI.
pub fn certificates(dir: &Path, san: &str) -> Certificates {
    std::fs::create_dir_all(dir).expect("certificate directory");
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run the openssl CLI ({e}): run scripts/install-deps.sh (Debian package openssl)")
            });
        assert!(
            output.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Tributary test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=tributary test broker",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("write server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    Certificates {
        ca: dir.join("ca.pem"),
        server_chain: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    }
}

pub fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .set("message.max.bytes", "2000000")
        // Offsets must follow the order of sends exactly: one request in flight, no reordering.
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: i32,
    key: Option<&[u8]>,
    value: &[u8],
) {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic)
        .partition(partition)
        .payload(value);
    if let Some(key) = key {
        record = record.key(key);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((error, returned)) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot produce to {topic}-{partition} within 60 s: {error}"
                );
                record = returned;
                if error
                    == rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    )
                {
                    // Wait for deliveries.
                    producer.poll(Duration::from_millis(10));
                } else {
                    // A partition the producer's metadata does not know yet (just added): the
                    // producer refreshes its metadata only every few minutes by itself.
                    let _ = producer
                        .client()
                        .fetch_metadata(Some(topic), Duration::from_secs(5));
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port picked as free and taken by another process before the node binds it: the start
    /// goes on, on other ports, instead of failing the test that wanted a broker.
    #[test]
    fn a_start_whose_port_was_taken_meanwhile_goes_on_on_other_ports() {
        let squatter = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .expect("bind a port to take");
        let taken = squatter.local_addr().expect("local address").port();
        let mut picks = 0;
        let kafka = Kafka::start_on(KafkaConfig::default(), |count| {
            picks += 1;
            let mut ports = free_ports(count);
            if picks == 1 {
                ports[0] = taken;
            }
            ports
        });
        assert_eq!(picks, 2, "the first attempt fails, the second starts");
        assert_ne!(kafka.bootstrap, format!("127.0.0.1:{taken}"));
        kafka.topic("after-a-retry", 1);
        kafka.send("after-a-retry", 0, None, b"{}");
        kafka.flush();
        assert_eq!(kafka.watermarks("after-a-retry", 0), (0, 1));
    }
}
