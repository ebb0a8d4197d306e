//! Settings applied to a child process between `fork` and `exec`, for the
//! tests and harnesses that start ringcast: a lower open-files limit (so a
//! test can make a shard create several rings) and a seccomp filter that
//! denies io_uring (what Docker's default profile does).
//!
//! Each function installs a `pre_exec` hook on a [`Command`]; the hooks
//! call only async-signal-safe functions on memory they own.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Runs `cmd` with `RLIMIT_NOFILE` (soft and hard) set to `n`.
pub fn limit_open_files(cmd: &mut Command, n: u64) -> &mut Command {
    let hook = move || {
        let lim = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        // SAFETY: setrlimit is async-signal-safe and reads a local struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and only calls
    // setrlimit (async-signal-safe); it allocates nothing and touches no
    // lock the parent might have held at fork.
    unsafe { cmd.pre_exec(hook) }
}

/// `struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }`
#[repr(C)]
#[derive(Clone, Copy)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// `struct sock_fprog { u16 len; struct sock_filter *filter; }`
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

/// The filter: on x86-64, `io_uring_setup` fails with `EPERM`; every other
/// system call (and every call of another ABI) is allowed.
const DENY_IO_URING: [SockFilter; 6] = [
    // seccomp_data.arch
    SockFilter {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: 4,
    },
    SockFilter {
        code: JEQ_K,
        jt: 0,
        jf: 3,
        k: AUDIT_ARCH_X86_64,
    },
    // seccomp_data.nr
    SockFilter {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: 0,
    },
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

/// Runs `cmd` under a seccomp filter that makes `io_uring_setup` fail with
/// `EPERM` (x86-64 only; elsewhere the filter allows everything).
pub fn deny_io_uring(cmd: &mut Command) -> &mut Command {
    let hook = || {
        let prog = SockFprog {
            len: DENY_IO_URING.len() as u16,
            filter: DENY_IO_URING.as_ptr(),
        };
        // SAFETY: prctl is async-signal-safe; PR_SET_SECCOMP reads `prog`
        // and the static filter it points to, both valid for the call.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const SockFprog,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and only calls
    // prctl (async-signal-safe) on stack and static memory.
    unsafe { cmd.pre_exec(hook) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_get_their_limits() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "ulimit -n"]);
        let out = limit_open_files(&mut cmd, 512).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "512");
        let mut cmd = Command::new("true");
        assert!(deny_io_uring(&mut cmd).status().unwrap().success());
    }
}
