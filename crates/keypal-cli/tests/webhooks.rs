//! A `key.revoked` whose revoke was answered 200 is delivered even when the process is
//! killed (SIGKILL) right after, with its receiver down: the outbox row was committed
//! with the revocation, and the next `keypal serve` delivers it.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Deployment, Server};
use serde_json::{Value, json};

/// `METHOD path` with a JSON body and `Authorization: Bearer token`: status and JSON answer.
fn request(addr: &str, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect(addr).expect("the server answers");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("the request is sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the answer is read");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{response}"));
    let json = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

/// A receiver on `listener` (one thread): the JSON bodies it got, answering 200 to each.
fn receive(listener: TcpListener) -> Arc<Mutex<Vec<Value>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    got
}

fn delivered_after_kill_9(deployment: &Deployment) {
    let token = deployment.cli(&["tokens", "create", "--name", "ops"]);
    token.assert_code(0);
    let token = token.stdout.trim_end().to_owned();
    deployment.create_app(&["--name", "Billing", "--label", "billing"]);
    let allow = [("KEYPAL_WEBHOOKS_ALLOW_PRIVATE", "true")];
    let server: Server = deployment.serve_with(&allow);

    // The receiver's port, with nothing listening on it yet.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let webhook = json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["key.revoked"]});
    let (status, created) = request(&server.addr, "POST", "/v1/webhooks", &token, &webhook);
    assert_eq!(status, 201, "{created}");

    let out = deployment.cli(&["keys", "create", "--app", "billing", "--json"]);
    out.assert_code(0);
    let key: Value = serde_json::from_str(&out.stdout).unwrap();
    let id = key["record"]["id"].as_str().unwrap().to_owned();
    let (status, revoked) = request(&server.addr, "POST", &format!("/v1/keys/{id}/revoke"), &token, &json!({}));
    assert_eq!(status, 200, "{revoked}");
    // SIGKILL at once: no shutdown, no flush.
    drop(server);

    let got = receive(TcpListener::bind(("127.0.0.1", port)).expect("the receiver's port is free again"));
    let _server = deployment.serve_with(&allow);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(90) {
        let revoked: Vec<Value> = got.lock().unwrap().iter().filter(|b| b["type"] == "key.revoked").cloned().collect();
        if let Some(event) = revoked.first() {
            assert_eq!(event["data"]["key"]["id"], id.as_str(), "{event}");
            assert!(event["data"]["key"]["revoked_at"].is_string(), "{event}");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("key.revoked was not delivered after the restart");
}

#[test]
fn a_revocation_acknowledged_before_kill_9_is_delivered_after_restart_on_sqlite() {
    delivered_after_kill_9(&Deployment::sqlite("webhooks-kill-9"));
}

#[test]
fn a_revocation_acknowledged_before_kill_9_is_delivered_after_restart_on_postgres() {
    let Some(deployment) = Deployment::postgres() else { return };
    delivered_after_kill_9(&deployment);
}
