//! Thin wrappers over the few raw system calls ringcast needs outside
//! io_uring: resource limits, listening sockets, `TCP_INFO`, process facts.
//!
//! Every call goes through [`cvt`], which turns the C convention (-1 and
//! `errno`) into `io::Result`, in the manner of mio's `syscall!`.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The soft and hard limit of `resource`.
fn getrlimit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the kernel to fill.
    cvt(unsafe { libc::getrlimit(resource, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// The soft and hard `RLIMIT_NOFILE` of this process.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    getrlimit(libc::RLIMIT_NOFILE)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the
/// limits now in force. The kernel checks each ring's registered file table
/// against the soft limit, so this is what lets one ring hold the most
/// sockets without privileges.
pub fn raise_nofile_to_hard() -> io::Result<(u64, u64)> {
    let (soft, hard) = nofile_limit()?;
    if soft < hard {
        let lim = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: `lim` is a valid rlimit read by the kernel.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok((hard, hard))
}

/// `RLIMIT_MEMLOCK` (soft), which io_uring charges ring memory against when
/// the process lacks `CAP_IPC_LOCK`.
pub fn memlock_limit() -> io::Result<u64> {
    getrlimit(libc::RLIMIT_MEMLOCK).map(|(soft, _)| soft)
}

/// Opens a TCP listener with `SO_REUSEADDR` and `SO_REUSEPORT`, so that
/// several threads can each own a listener on the same address and the
/// kernel spreads connections over them.
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket(2) call; the result is checked below.
    let fd = cvt(unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    if let SocketAddr::V6(_) = addr {
        set_int_opt(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (storage, len) = sockaddr_storage(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) })?;
    // SAFETY: plain listen(2) on a socket we own.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// The address a socket is bound to (to learn the port after binding to 0).
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: a zeroed sockaddr_storage is a valid value for getsockname to overwrite.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` and `len` describe a writable buffer of that size.
    cvt(unsafe { libc::getsockname(fd, (&raw mut storage).cast(), &mut len) })?;
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET).
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const storage).cast()) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6).
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const storage).cast()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unknown address family",
        )),
    }
}

fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int for the duration of the call.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// An IPv4 address as the kernel's `sockaddr_in`.
pub fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sockaddr_in(a)) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Connections waiting in a listening socket's accept queue
/// (`tcpi_unacked` of `TCP_INFO`, which holds the queue length for a socket
/// in the LISTEN state).
pub fn listen_queue_len(fd: RawFd) -> io::Result<u32> {
    // SAFETY: all-zero is a valid tcp_info for the kernel to overwrite.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` describe a writable buffer of that size.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    })?;
    Ok(info.tcpi_unacked)
}

/// The size of a memory page.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    page.max(1) as u64
}

/// Clock ticks per second (`USER_HZ`), the unit of CPU times in `/proc`.
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Gives the C heap's free memory back to the kernel (glibc's
/// `malloc_trim(0)`). glibc keeps freed chunks inside its arenas and only
/// returns pages at the top of one on its own; this also releases whole
/// free pages in the middle. ringcast's own allocations go to mimalloc,
/// which returns memory by itself; what lives in the C heap is aws-lc's
/// (the TLS keys). Returns whether any memory was released.
pub fn trim_c_heap() -> bool {
    // SAFETY: malloc_trim takes no pointers; it walks glibc's arenas under
    // their own locks and may be called from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Resident set size of this process in bytes, from `/proc/self/statm`.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_listeners() {
        let (soft, hard) = raise_nofile_to_hard().unwrap();
        assert!(soft >= 1 && soft == hard);
        let l = reuseport_listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = local_addr(l.as_raw_fd()).unwrap();
        assert!(addr.port() != 0);
        // A second listener on the same port is what SO_REUSEPORT allows.
        let l2 = reuseport_listener(addr, 16).unwrap();
        assert_eq!(local_addr(l2.as_raw_fd()).unwrap(), addr);
        assert_eq!(listen_queue_len(l.as_raw_fd()).unwrap(), 0);
        assert!(rss_bytes().unwrap() > 0);
        assert!(clock_ticks_per_second() >= 1.0);
    }

    #[test]
    fn trimming_gives_freed_heap_back() {
        // This test binary allocates with glibc (no global allocator set):
        // 60 MB in small blocks, all but every 1000th freed, leaves free
        // pages in the middle of the heap that only a trim returns.
        let blocks: Vec<Box<[u8; 600]>> = (0..100_000).map(|_| Box::new([1u8; 600])).collect();
        let kept: Vec<_> = blocks.into_iter().step_by(1000).collect();
        assert!(trim_c_heap(), "nothing released");
        assert_eq!(kept.len(), 100);
    }
}
