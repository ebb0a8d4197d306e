//! Start-up: the banner, `--help`, configuration errors, and a clear failure
//! where io_uring is blocked (as by a container's seccomp profile).

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::Server;

fn ringcast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringcast"))
}

/// Installs a seccomp filter that makes `io_uring_setup` fail with EPERM,
/// which is what Docker's default profile does.
fn block_io_uring() -> std::io::Result<()> {
    // struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }
    #[repr(C)]
    struct SockFilter {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    let filter = [
        // Only x86-64 system call numbers are checked; other ABIs pass.
        SockFilter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 4,
        }, // seccomp_data.arch
        SockFilter {
            code: JEQ_K,
            jt: 0,
            jf: 3,
            k: AUDIT_ARCH_X86_64,
        },
        SockFilter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        }, // seccomp_data.nr
        SockFilter {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        SockFilter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: RET_ERRNO_EPERM,
        },
        SockFilter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: RET_ALLOW,
        },
    ];
    let prog = SockFprog {
        len: filter.len() as u16,
        filter: filter.as_ptr(),
    };
    // SAFETY: runs in the forked child before exec; prctl reads `prog`,
    // which outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const SockFprog,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
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
    // SAFETY: `block_io_uring` only calls prctl, which is async-signal-safe.
    unsafe { cmd.pre_exec(block_io_uring) };
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
