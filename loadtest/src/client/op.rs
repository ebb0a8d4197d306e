//! What each of the harness's io_uring operations is for: the `op` byte of
//! its [`UserData`](ringcast_uring::UserData) tag, and the names errors are
//! reported under.

/// What an operation was for: the `op` field of its tag. The other fields
/// are the connection's slot and generation, except on sends, whose tag
/// the ring chooses (their slot and generation come back as the send's
/// owner, see the worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// `IORING_OP_SOCKET` into a slot.
    Socket = 1,
    /// A socket option (uring_cmd setsockopt).
    Opt = 2,
    /// `IORING_OP_BIND` to the chosen source address.
    Bind = 3,
    /// `IORING_OP_CONNECT`.
    Connect = 4,
    /// A send: the connect chain's request, or bytes queued later.
    Send = 5,
    /// The multishot receive.
    Recv = 6,
    /// Cancellation of a connection's operations.
    Cancel = 7,
    /// Close of the slot.
    Close = 8,
}

impl Op {
    /// The operation a tag's `op` byte names; `None` for values never
    /// submitted.
    pub fn from_code(code: u8) -> Option<Op> {
        Some(match code {
            1 => Op::Socket,
            2 => Op::Opt,
            3 => Op::Bind,
            4 => Op::Connect,
            5 => Op::Send,
            6 => Op::Recv,
            7 => Op::Cancel,
            8 => Op::Close,
            _ => return None,
        })
    }

    /// The name errors of this operation are counted under.
    pub fn name(self) -> &'static str {
        match self {
            Op::Socket => "socket",
            Op::Opt => "setsockopt",
            Op::Bind => "bind",
            Op::Connect => "connect",
            Op::Send => "send",
            Op::Recv => "recv",
            Op::Cancel => "cancel",
            Op::Close => "close",
        }
    }
}

/// The symbolic name of an errno, for error tables.
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECANCELED => "ECANCELED",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::EPIPE => "EPIPE",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => "errno",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for op in [
            Op::Socket,
            Op::Opt,
            Op::Bind,
            Op::Connect,
            Op::Send,
            Op::Recv,
            Op::Cancel,
            Op::Close,
        ] {
            assert_eq!(Op::from_code(op as u8), Some(op));
        }
        assert_eq!(Op::from_code(0), None);
        assert_eq!(Op::from_code(9), None);
    }
}
