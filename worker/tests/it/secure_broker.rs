//! A Kafka endpoint that requires SASL_SSL with SASL PLAIN, as Event Hubs' Kafka endpoint does:
//! librdkafka's mock cluster (the real Kafka protocol) behind a front door in the test process
//! that terminates TLS with a server certificate signed by a CA the test generates (openssl
//! CLI), runs the SASL exchange a Kafka broker runs (ApiVersions, SaslHandshake, then
//! SaslAuthenticate with PLAIN), and only then relays the connection to the mock broker. The
//! mock broker advertises the front door's address, so every client (the worker, the test's
//! producer) speaks SASL_SSL to every broker it learns of, and a client that cannot complete
//! TLS or SASL gets nothing.
//!
//! Why not an Apache Kafka broker: its jars come from Maven Central, which this machine kind
//! cannot reach (crates.io, PyPI, Debian and npm only), and none of those ship a Kafka broker;
//! tansu 0.6 (crates.io) builds a TLS acceptor it never uses, so it cannot serve TLS at all.
//! What the worker does is the same either way: librdkafka's TLS (OpenSSL, host name
//! verification on) and its SASL PLAIN client, against a listener that requires both.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::bindings as rd;
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaType;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The SASL PLAIN user name of Event Hubs' Kafka endpoint.
pub const EVENT_HUBS_USER: &str = "$ConnectionString";

/// The message a Kafka broker (PlainServerCallbackHandler) sends with a refused login.
const REFUSED: &str = "Authentication failed: Invalid username or password";

const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;

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

/// A connection string shaped like Event Hubs' with a fresh random key (base64-like, 44 chars).
pub fn fake_connection_string(namespace: &str) -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Endpoint=sb://{namespace}.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={a}{}=",
        &b[..11]
    )
}

/// librdkafka's mock cluster, owned through the C API: the Rust wrapper does not expose the
/// handle that setting a broker's advertised address needs.
struct Mock {
    cluster: *mut rd::rd_kafka_mock_cluster_t,
    // Kept alive for the cluster, which runs on this client's handle; dropped after it.
    _client: Client<DefaultClientContext>,
}

impl Mock {
    fn new() -> Mock {
        let config = ClientConfig::new();
        let native = config.create_native_config().expect("native config");
        let client = Client::new(
            &config,
            native,
            RDKafkaType::RD_KAFKA_PRODUCER,
            DefaultClientContext,
        )
        .expect("mock cluster client");
        // SAFETY: the client handle is valid; the cluster is destroyed before the client.
        let cluster = unsafe { rd::rd_kafka_mock_cluster_new(client.native_ptr(), 1) };
        assert!(!cluster.is_null(), "cannot create the mock cluster");
        Mock {
            cluster,
            _client: client,
        }
    }

    /// Where the mock broker really listens (plain Kafka).
    fn listener(&self) -> String {
        // SAFETY: the cluster is alive; librdkafka returns a string it owns.
        let bootstraps =
            unsafe { std::ffi::CStr::from_ptr(rd::rd_kafka_mock_cluster_bootstraps(self.cluster)) };
        bootstraps.to_string_lossy().into_owned()
    }

    /// Makes broker 1 advertise `host:port` in Metadata and FindCoordinator responses.
    fn advertise(&self, host: &str, port: u16) {
        let host = std::ffi::CString::new(host).expect("host");
        // SAFETY: the cluster is alive; librdkafka copies the host.
        unsafe {
            rd::rd_kafka_mock_broker_set_host_port(self.cluster, 1, host.as_ptr(), i32::from(port))
        };
    }

    fn create_topic(&self, topic: &str, partitions: i32) {
        let name = std::ffi::CString::new(topic).expect("topic");
        // SAFETY: the cluster is alive; librdkafka copies the name.
        let err =
            unsafe { rd::rd_kafka_mock_topic_create(self.cluster, name.as_ptr(), partitions, 1) };
        assert_eq!(
            err,
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
            "create topic {topic}"
        );
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_mock_cluster_new and destroyed once, before its client.
        unsafe { rd::rd_kafka_mock_cluster_destroy(self.cluster) };
    }
}

/// A broker on 127.0.0.1 that accepts only SASL_SSL + PLAIN as `$ConnectionString` with its
/// connection string as the password, over TLS with a certificate the test CA signed.
pub struct SecureBroker {
    /// Where clients connect: the front door (127.0.0.1:port).
    pub bootstrap: String,
    /// The CA that signed the broker's certificate (PEM).
    pub ca: PathBuf,
    /// The password the broker accepts.
    password: Arc<Mutex<String>>,
    /// Bumped to drop every open connection (their clients must log in again).
    generation: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    mock: Mock,
}

impl SecureBroker {
    /// A broker whose certificate names localhost and 127.0.0.1.
    pub fn start(dir: &Path) -> SecureBroker {
        Self::start_with_san(dir, "DNS:localhost,IP:127.0.0.1")
    }

    /// A broker whose certificate carries the subject alternative names `san`.
    pub fn start_with_san(dir: &Path, san: &str) -> SecureBroker {
        let certs = certificates(dir, san);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&certs.server_chain)
                .expect("read server.pem")
                .collect::<Result<_, _>>()
                .expect("parse server.pem");
        let key = PrivateKeyDer::from_pem_file(&certs.server_key).expect("read server.key");
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        let tls = Arc::new(tls);

        let mock = Mock::new();
        let upstream = mock.listener();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the front door");
        let port = listener.local_addr().expect("local address").port();
        mock.advertise("127.0.0.1", port);
        let password = Arc::new(Mutex::new(fake_connection_string("tributary-test")));
        let generation = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (stop, password, generation) = (stop.clone(), password.clone(), generation.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let door = Door {
                        tls: tls.clone(),
                        upstream: upstream.clone(),
                        password: password.clone(),
                        generation: generation.clone(),
                    };
                    std::thread::spawn(move || {
                        // A connection ends with an error whenever a client gives up (that is
                        // what the failure tests do): nothing to report.
                        let _ = relay(stream, &door);
                    });
                }
            })
        };
        SecureBroker {
            bootstrap: format!("127.0.0.1:{port}"),
            ca: certs.ca,
            password,
            generation,
            stop,
            acceptor: Some(acceptor),
            mock,
        }
    }

    pub fn topic(&self, name: &str, partitions: i32) {
        self.mock.create_topic(name, partitions);
    }

    /// The connection string the broker accepts now.
    pub fn connection_string(&self) -> String {
        self.password.lock().expect("password").clone()
    }

    /// Accepts a new connection string only (as regenerating an Event Hubs key does) and drops
    /// every open connection, so that clients must log in again. Returns the new one.
    pub fn rotate_connection_string(&self) -> String {
        let new = fake_connection_string("tributary-test");
        *self.password.lock().expect("password") = new.clone();
        self.generation.fetch_add(1, Ordering::SeqCst);
        new
    }

    /// A producer that connects as an Event Hubs client does: SASL_SSL, PLAIN, the test CA.
    pub fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", "PLAIN")
            .set("sasl.username", EVENT_HUBS_USER)
            .set("sasl.password", self.connection_string())
            .set("ssl.ca.location", self.ca.to_string_lossy().as_ref())
            .set("linger.ms", "2")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer")
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so that it sees the flag.
        let _ = TcpStream::connect(&self.bootstrap);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Dropping the mock closes the upstream side of every relayed connection.
    }
}

/// Where a connection is in the SASL exchange.
enum Phase {
    /// Only ApiVersions, SaslHandshake and SaslAuthenticate are served; `versions` is the
    /// version of an ApiVersions request forwarded to the mock broker, awaiting its response.
    Unauthenticated {
        versions: Option<i16>,
    },
    Authenticated,
    /// Refused: the response is sent, then the connection closes (as Kafka closes it).
    Refused,
}

/// What every connection of the front door shares.
struct Door {
    tls: Arc<rustls::ServerConfig>,
    /// The mock broker's real address.
    upstream: String,
    password: Arc<Mutex<String>>,
    generation: Arc<AtomicU64>,
}

/// Serves one client connection: TLS, then SASL PLAIN, then relays to the mock broker.
fn relay(client: TcpStream, door: &Door) -> io::Result<()> {
    let born = door.generation.load(Ordering::SeqCst);
    let mut client = client;
    let mut upstream = TcpStream::connect(&door.upstream)?;
    client.set_nonblocking(true)?;
    upstream.set_nonblocking(true)?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let mut conn = rustls::ServerConnection::new(door.tls.clone()).map_err(io::Error::other)?;
    let mut phase = Phase::Unauthenticated { versions: None };
    // Plain bytes: from the client not yet handled, to the mock broker, from it, to the client.
    let (mut from_client, mut to_upstream) = (Vec::new(), Vec::new());
    let (mut from_upstream, mut to_client) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        wait(
            &client,
            &upstream,
            conn.wants_write(),
            !to_upstream.is_empty(),
        );
        if door.generation.load(Ordering::SeqCst) != born {
            return Ok(());
        }

        // TLS records in, plain bytes out.
        match conn.read_tls(&mut client) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                if let Err(error) = conn.process_new_packets() {
                    // Let the client read the alert (e.g. after a failed handshake).
                    let _ = conn.write_tls(&mut client);
                    return Err(io::Error::other(error));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => from_client.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        match upstream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => from_upstream.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }

        // The SASL exchange, one request at a time; then everything passes through.
        loop {
            match &mut phase {
                Phase::Authenticated => {
                    to_upstream.append(&mut from_client);
                    to_client.append(&mut from_upstream);
                    break;
                }
                Phase::Refused => {
                    from_client.clear();
                    break;
                }
                Phase::Unauthenticated {
                    versions: Some(version),
                } => {
                    let version = *version;
                    let Some(frame) = take_frame(&mut from_upstream) else {
                        break;
                    };
                    to_client.extend(framed(&with_sasl_versions(frame, version)));
                    phase = Phase::Unauthenticated { versions: None };
                }
                Phase::Unauthenticated { versions: None } => {
                    let Some(frame) = take_frame(&mut from_client) else {
                        break;
                    };
                    let request = Request::parse(&frame)?;
                    match request.api_key {
                        API_VERSIONS => {
                            to_upstream.extend(framed(&frame));
                            phase = Phase::Unauthenticated {
                                versions: Some(request.api_version),
                            };
                        }
                        SASL_HANDSHAKE => {
                            to_client.extend(framed(&sasl_handshake_response(&request)));
                        }
                        SASL_AUTHENTICATE => {
                            let password = door.password.lock().expect("password").clone();
                            let accepted = plain_login_ok(&request, &password);
                            to_client
                                .extend(framed(&sasl_authenticate_response(&request, accepted)));
                            phase = if accepted {
                                Phase::Authenticated
                            } else {
                                Phase::Refused
                            };
                        }
                        // Kafka closes a connection that sends anything else before SASL.
                        _ => return Ok(()),
                    }
                }
            }
        }

        // Plain bytes out: to the mock broker, and into TLS records for the client.
        if !to_upstream.is_empty() {
            match upstream.write(&to_upstream) {
                Ok(n) => {
                    to_upstream.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if !to_client.is_empty() {
            let n = conn.writer().write(&to_client)?;
            to_client.drain(..n);
        }
        while conn.wants_write() {
            match conn.write_tls(&mut client) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if matches!(phase, Phase::Refused) && to_client.is_empty() && !conn.wants_write() {
            // As a Kafka broker does, close a little after the refusal is on its way.
            std::thread::sleep(Duration::from_millis(100));
            return Ok(());
        }
    }
}

/// Waits until either socket is readable, or writable where there is something to write.
fn wait(client: &TcpStream, upstream: &TcpStream, client_out: bool, upstream_out: bool) {
    let events = |out: bool| libc::POLLIN | if out { libc::POLLOUT } else { 0 };
    let mut fds = [
        libc::pollfd {
            fd: client.as_raw_fd(),
            events: events(client_out),
            revents: 0,
        },
        libc::pollfd {
            fd: upstream.as_raw_fd(),
            events: events(upstream_out),
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfd entries for sockets this thread owns; a bounded wait.
    unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) };
}

/// The first whole Kafka frame (without its length prefix), removed from `buf`.
fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    if buf.len() < 4 {
        return None;
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if buf.len() < 4 + len {
        return None;
    }
    let frame = buf[4..4 + len].to_vec();
    buf.drain(..4 + len);
    Some(frame)
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A request's header (v1: the SASL requests and ApiVersions up to v2 are not flexible) and
/// where its body starts.
struct Request {
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    body: Vec<u8>,
}

impl Request {
    fn parse(frame: &[u8]) -> io::Result<Request> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "short Kafka request");
        let i16_at = |at: usize| -> io::Result<i16> {
            Ok(i16::from_be_bytes(
                frame
                    .get(at..at + 2)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            ))
        };
        let api_key = i16_at(0)?;
        let api_version = i16_at(2)?;
        let correlation_id = i32::from_be_bytes(
            frame
                .get(4..8)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        let client_id_len = i16_at(8)?.max(0) as usize;
        let body = frame.get(10 + client_id_len..).ok_or_else(bad)?.to_vec();
        Ok(Request {
            api_key,
            api_version,
            correlation_id,
            body,
        })
    }
}

/// SaslHandshake v0/v1 response: PLAIN is the one mechanism enabled.
fn sasl_handshake_response(request: &Request) -> Vec<u8> {
    let asked = request
        .body
        .get(2..)
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    // 33: UNSUPPORTED_SASL_MECHANISM.
    let error: i16 = if asked == "PLAIN" { 0 } else { 33 };
    let mut out = request.correlation_id.to_be_bytes().to_vec();
    out.extend(error.to_be_bytes());
    out.extend(1_i32.to_be_bytes());
    out.extend(5_i16.to_be_bytes());
    out.extend(b"PLAIN");
    out
}

/// Whether a SaslAuthenticate request carries the PLAIN login `\0$ConnectionString\0password`.
fn plain_login_ok(request: &Request, password: &str) -> bool {
    let Some(token) = request.body.get(4..) else {
        return false;
    };
    let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
    parts.len() == 3 && parts[1] == EVENT_HUBS_USER.as_bytes() && parts[2] == password.as_bytes()
}

/// SaslAuthenticate v0/v1 response; refused with 58 (SASL_AUTHENTICATION_FAILED) and Kafka's
/// message.
fn sasl_authenticate_response(request: &Request, accepted: bool) -> Vec<u8> {
    let mut out = request.correlation_id.to_be_bytes().to_vec();
    if accepted {
        out.extend(0_i16.to_be_bytes());
        out.extend((-1_i16).to_be_bytes());
    } else {
        out.extend(58_i16.to_be_bytes());
        out.extend((REFUSED.len() as i16).to_be_bytes());
        out.extend(REFUSED.as_bytes());
    }
    // No auth bytes back for PLAIN.
    out.extend(0_i32.to_be_bytes());
    if request.api_version >= 1 {
        // Session lifetime: 0, no re-authentication.
        out.extend(0_i64.to_be_bytes());
    }
    out
}

/// The mock broker's ApiVersions response with SaslHandshake and SaslAuthenticate (v0-1)
/// added, as a broker with a SASL listener lists them. `version` is the request's version; an
/// error response (e.g. an unsupported version, which the client retries lower) passes as is.
fn with_sasl_versions(response: Vec<u8>, version: i16) -> Vec<u8> {
    let added: [(i16, i16, i16); 2] = [(SASL_HANDSHAKE, 0, 1), (SASL_AUTHENTICATE, 0, 1)];
    if response.len() < 6 || response[4..6] != [0, 0] {
        return response;
    }
    let mut out = response[..6].to_vec();
    let rest = &response[6..];
    if version >= 3 {
        // Flexible: a compact array (unsigned varint of count + 1), entries end in tagged fields.
        let (count_plus_one, used) = read_uvarint(rest);
        write_uvarint(&mut out, count_plus_one + added.len() as u64);
        for (key, min, max) in added {
            out.extend(key.to_be_bytes());
            out.extend(min.to_be_bytes());
            out.extend(max.to_be_bytes());
            out.push(0);
        }
        out.extend_from_slice(&rest[used..]);
    } else {
        if rest.len() < 4 {
            return response;
        }
        let count = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        out.extend((count + added.len() as i32).to_be_bytes());
        for (key, min, max) in added {
            out.extend(key.to_be_bytes());
            out.extend(min.to_be_bytes());
            out.extend(max.to_be_bytes());
        }
        out.extend_from_slice(&rest[4..]);
    }
    out
}

fn read_uvarint(bytes: &[u8]) -> (u64, usize) {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    (value, bytes.len())
}

fn write_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Flushes a producer, failing the test with a clear message.
pub fn flush(producer: &ThreadedProducer<DefaultProducerContext>) {
    producer
        .flush(Duration::from_secs(30))
        .expect("flush the producer over SASL_SSL");
}
