//! `deploy/nginx/ringcast.conf`, the shipped file with its addresses
//! changed, run by Debian's nginx in front of two nodes: WebSockets, event
//! streams, long polls and publishes go through it, spread over both
//! nodes with no affinity. The nodes share their channels through a real
//! `redis-server` (`--redis`), so a message published through nginx —
//! to whichever node it picks — reaches every client, whichever node
//! nginx put it on.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::{publish, Server, Ws};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

/// nginx with the shipped configuration in front of `nodes`, on a free
/// port; stopped on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start(nodes: [&Server; 2]) -> Nginx {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("ringcast-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Workers may run as another user: let them write their temp files.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let shipped = include_str!("../../deploy/nginx/ringcast.conf");
        let site = shipped
            .replace(
                "server 127.0.0.1:8081",
                &format!("server {}", nodes[0].addr),
            )
            .replace(
                "server 127.0.0.1:8082",
                &format!("server {}", nodes[1].addr),
            )
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
        assert_ne!(
            site, shipped,
            "the shipped file's addresses moved: update this test"
        );
        std::fs::write(dir.join("ringcast.conf"), site).unwrap();
        let d = dir.display();
        let main = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               include {d}/ringcast.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx (scripts/cluster-deps.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, port, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then exits. A SIGKILL
        // would leave the workers running, orphaned, after the test.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
            eprintln!("---- nginx error log ----\n{log}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            return t.to_string();
        }
    }
}

#[tokio::test]
async fn every_transport_works_through_nginx_over_two_nodes() {
    let redis = RedisServer::start();
    let cluster = ["--redis", redis.url.as_str()];
    let (a, b) = (Server::start(&cluster), Server::start(&cluster));
    let nodes = [&a, &b];
    let nginx = Nginx::start(nodes);

    // WebSockets: upgraded through nginx, spread over both nodes.
    let mut sockets = Vec::new();
    for _ in 0..4 {
        let url = format!("ws://127.0.0.1:{}/ws/room", nginx.port);
        sockets.push(tokio_tungstenite::connect_async(url).await.unwrap().0);
    }
    for node in nodes {
        let upgrades = node.metric("ringcast_upgrades_total", "").await;
        assert_eq!(upgrades, 2, "round robin: two WebSockets on each node");
    }

    // An event stream and a long poll through nginx, waiting.
    let sse = reqwest::get(nginx.url("/sse/room")).await.unwrap();
    assert_eq!(sse.status(), 200);
    let mut events = sse.bytes_stream();
    let long_poll = tokio::spawn(reqwest::get(nginx.url("/poll/room?timeout=20")));
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // Published once, through nginx, to one of the nodes.
    let r = reqwest::Client::new()
        .post(nginx.url("/pub/room"))
        .header("Content-Type", "text/plain")
        .body("through nginx")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for ws in &mut sockets {
        assert_eq!(next_text(ws).await, "through nginx");
    }
    // The event arrives at once: nothing buffers it on the way.
    let mut seen = String::new();
    while !seen.contains("data:through nginx") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("the event within 5 s: unbuffered")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let answered = tokio::time::timeout(Duration::from_secs(10), long_poll)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answered.status(), 200);
    let body: serde_json::Value = answered.json().await.unwrap();
    assert_eq!(body["messages"][0]["data"], "through nginx", "{body}");

    // A second publish, directly on node B, reaches the WebSockets of both.
    publish(&b, "room", "text/plain", "on b".to_string()).await;
    for ws in &mut sockets {
        assert_eq!(next_text(ws).await, "on b");
    }
    // Publishing through nginx gets its id.
    let r = reqwest::Client::new()
        .post(nginx.url("/pub/room"))
        .header("Content-Type", "text/plain")
        .body("published via nginx")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id: serde_json::Value = r.json().await.unwrap();
    assert!(id["id"].as_str().is_some_and(|i| i.contains('-')), "{id}");

    // A node going away closes its WebSockets with 1001, through nginx.
    let mut a = a;
    a.send_sigterm();
    let closes = sockets.iter_mut().map(|ws| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
            if let Message::Close(frame) = m {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    });
    let codes = futures_util::future::join_all(closes).await;
    let closed_1001 = codes.iter().filter(|c| **c == Some(1001)).count();
    assert_eq!(closed_1001, 2, "the two WebSockets on the draining node");
    assert!(a
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
}
