//! /readyz says whether the worker can reach its brokers and its table: red with the reason
//! while the broker is stopped or the table's log is gone, green again once they are back.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;
use tributary_testkit::server::free_port;

/// GET on 127.0.0.1:`port`: (status code, body), or None while nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let code = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// Waits until /readyz answers `code`, and returns its body; on timeout the panic names the
/// last answer and carries the worker's log, so a failure says what the worker saw.
fn readyz_until(
    port: u16,
    code: u16,
    what: &str,
    timeout: Duration,
    worker: &mut Worker,
) -> String {
    let last = RefCell::new(None);
    wait_for_or_explain(
        what,
        timeout,
        || {
            let answer = get(port, "/readyz");
            let done = answer
                .as_ref()
                .is_some_and(|(answered, _)| *answered == code);
            *last.borrow_mut() = answer;
            done
        },
        || {
            format!(
                "; /readyz last answered {:?}; the worker {}; its log:\n{}",
                last.borrow(),
                match worker.exited() {
                    Some(status) => format!("exited ({status})"),
                    None => "still runs".to_string(),
                },
                worker.stderr_text()
            )
        },
    );
    last.into_inner().map(|(_, body)| body).unwrap_or_default()
}

#[test]
fn readiness_fails_with_the_reason_while_the_broker_or_the_table_is_gone() {
    let mut broker = Broker::start();
    broker.topic("t", 1);
    for i in 0..5 {
        broker.send("t", 0, None, reading(i, "oslo", 1.0).as_bytes());
    }
    broker.flush();
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "ready", "t");
    manifest.trigger = "{}";
    let path = ws.write("m.yaml", &manifest.render());
    let port = free_port();
    let port_text = port.to_string();
    let mut worker = Worker::start_with_env(
        &ws,
        &path,
        &broker.bootstrap,
        "continuous",
        &[(tributary_crds::pod::ENV_METRICS_PORT, &port_text)],
    );
    let rows = |ws: &Workspace| {
        if ws.table().join("_delta_log").exists() {
            read_table(&ws.table()).rows()
        } else {
            0
        }
    };
    wait_for("the first rows", Duration::from_secs(60), || rows(&ws) == 5);
    readyz_until(port, 200, "ready", Duration::from_secs(30), &mut worker);

    // The broker stops: not ready, saying why; still alive (the worker retries).
    let node = broker.node_ids()[0];
    broker.stop(node);
    let reason = readyz_until(
        port,
        503,
        "not ready while the broker is down",
        Duration::from_secs(40),
        &mut worker,
    );
    assert!(
        reason.contains("cannot reach the Kafka brokers at") && reason.contains(&broker.bootstrap),
        "{reason}"
    );
    assert_eq!(get(port, "/healthz").map(|(code, _)| code), Some(200));

    // The broker is back: ready again, and new records are read.
    broker.restart(node);
    readyz_until(
        port,
        200,
        "ready once the broker is back",
        Duration::from_secs(60),
        &mut worker,
    );
    for i in 5..8 {
        broker.send("t", 0, None, reading(i, "rome", 2.0).as_bytes());
    }
    broker.flush();
    wait_for("rows after the restart", Duration::from_secs(60), || {
        rows(&ws) == 8
    });

    // The table's log disappears (a volume unmounted): not ready, naming the table.
    let log = ws.table().join("_delta_log");
    let moved = ws.path("moved_delta_log");
    std::fs::rename(&log, &moved).expect("move the log away");
    let reason = readyz_until(
        port,
        503,
        "not ready without the table",
        Duration::from_secs(30),
        &mut worker,
    );
    assert!(
        reason.contains("the Delta table at") && reason.contains("has lost its commit"),
        "{reason}"
    );
    std::fs::rename(&moved, &log).expect("put the log back");
    readyz_until(
        port,
        200,
        "ready once the table is back",
        Duration::from_secs(30),
        &mut worker,
    );

    worker.terminate();
    let status = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{}", worker.stderr_text());
    let offsets: Vec<i64> = read_table(&ws.table())
        .coordinates()
        .iter()
        .map(|c| c.2)
        .collect();
    assert_eq!(offsets, (0..8).collect::<Vec<_>>(), "every record once");
}
