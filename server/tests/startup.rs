//! Start-up: the banner, `--help`, configuration errors, and a clear failure
//! where io_uring is blocked (as by a container's seccomp profile).

mod common;

use std::process::{Command, Stdio};

use common::Server;

fn ringcast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringcast"))
}

#[test]
fn blocked_io_uring_fails_with_a_clear_message() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the seccomp filter is written for x86-64");
        return;
    }
    let mut cmd = ringcast();
    cmd.args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    uring::child::deny_io_uring(&mut cmd);
    let out = cmd.output().expect("run ringcast");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("io_uring is not available"), "{stderr}");
    assert!(
        stderr.contains("seccomp"),
        "the message says what to do: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn configuration_errors_exit_2_and_name_the_option() {
    let out = ringcast().args(["--shards", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shards must be between 1 and 64"));
    let out = ringcast()
        .args(["--ping-interval", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid duration"));
    let out = ringcast()
        .env("RINGCAST_MAX_OUTBOUND", "lots")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "environment variables are checked too"
    );
}

#[test]
fn an_open_node_on_a_reachable_address_refuses_to_start_unless_told() {
    // No publish key, and an address others can reach: exit 2, saying how
    // to fix it.
    let out = ringcast().args(["--listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no --publish-key: anyone who reaches 0.0.0.0:0 could publish"),
        "{stderr}"
    );
    assert!(stderr.contains("--insecure-public-publish"), "{stderr}");
    // Told, it starts, and the banner says so plainly.
    let server = Server::start(&["--listen", "0.0.0.0:0", "--insecure-public-publish"]);
    assert!(
        server
            .banner
            .contains("publishing   HTTP publishing OPEN TO ANYONE who reaches 0.0.0.0:0"),
        "{}",
        server.banner
    );
    drop(server);
    // With a key, or on loopback only, there is nothing to be told.
    let key = "0123456789abcdef0123";
    let server = Server::start(&["--listen", "0.0.0.0:0", "--publish-key", key]);
    assert!(
        server
            .banner
            .contains("publishing   HTTP publishing needs a key (1 configured)"),
        "{}",
        server.banner
    );
    drop(server);
    let server = Server::start(&[]);
    assert!(
        server
            .banner
            .contains("open to local clients (loopback only"),
        "{}",
        server.banner
    );
    // A key too short to be one is a configuration error.
    let out = ringcast()
        .args(["--publish-key", "secret"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
}

#[test]
fn an_address_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = ringcast().args(["--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn help_explains_every_option_with_its_default() {
    let out = ringcast().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--listen",
        "--shards",
        "--max-connections",
        "--ping-interval",
        "--handshake-timeout",
        "--idle-timeout",
        "--close-timeout",
        "--drain-timeout",
        "--max-message-size",
        "--max-batch-size",
        "--max-outbound",
        "--max-lag",
        "--max-pinned",
        "--no-tcp-nodelay",
        "--transports",
        "--tcp-notsent-lowat",
        "--max-head-size",
        "--history-size",
        "--history-ttl",
        "--sse-heartbeat",
        "--sse-retry",
        "--poll-timeout",
        "--poll-max-timeout",
        "--poll-batch",
        "--max-stream-channels",
        "--max-subscriptions",
        "--client-publish",
        "--no-echo",
        "--recv-buffers",
        "--recv-buffer-size",
        "--log",
        "--config",
    ] {
        assert!(help.contains(option), "--help lacks {option}");
    }
    assert!(
        help.contains("[env: RINGCAST_PING_INTERVAL="),
        "env names are shown"
    );
    assert!(
        help.matches("[default:").count() >= 20,
        "defaults are shown"
    );
}

#[test]
fn the_banner_says_where_to_connect_and_what_limits_capacity() {
    let server = Server::start(&["--max-connections", "300000"]);
    let b = &server.banner;
    assert!(
        b.contains(&format!("ringcast listening on http://{}", server.addr)),
        "{b}"
    );
    assert!(b.contains("capacity: 2 shards × "), "{b}");
    assert!(b.contains("RLIMIT_NOFILE="), "{b}");
    assert!(
        b.contains(&format!("ws://{}/ws/{{channel}}", server.addr)),
        "{b}"
    );
    assert!(b.contains("curl"), "{b}");
}
