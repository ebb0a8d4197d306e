//! Sends whose bytes the ring owns until the kernel is done with them.
//!
//! The kernel reads a send's buffers (and a `sendmsg`'s header and iovec
//! array, and a connect chain's socket addresses) after the submission
//! returns, until the send's completion is posted. So the ring takes the
//! buffers into a slab of sends in flight ([`Sends`]) when it builds the
//! submission, tags the send with the slab index, and gives them back only
//! through `Ring::finish_send` — called with the completion. A connection
//! that goes away meanwhile changes nothing: the bytes stay in the slab.
//!
//! Buffers are [`Bytes`], so a broadcast frame encoded once is referenced
//! by every subscriber's send without a copy.

use std::net::SocketAddrV4;

use bytes::Bytes;
use io_uring::types::{DestinationSlot, Fixed};
use io_uring::{opcode, squeue};
use slab::Slab;

use crate::sys::sockaddr_in;
use crate::user_data::UserData;

/// Most buffers in one `sendmsg`.
pub const MAX_IOV: usize = 64;

/// A `sendmsg` header with its iovec array, boxed so its address is stable
/// while the kernel reads it.
struct MsgHdr {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_IOV],
}

/// The socket addresses of a connect chain.
struct ChainAddrs {
    src: libc::sockaddr_in,
    dst: libc::sockaddr_in,
}

/// A send in flight: what the kernel may still be reading.
struct InFlight {
    owner: u64,
    gen: u32,
    first: Bytes,
    rest: Vec<Bytes>,
    len: usize,
    /// Read by the kernel only through the pointers given at submission.
    _msg: Option<Box<MsgHdr>>,
    _addrs: Option<Box<ChainAddrs>>,
}

/// The sends of one ring.
#[derive(Default)]
pub(crate) struct Sends {
    slab: Slab<InFlight>,
    next_gen: u32,
}

impl Sends {
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    fn gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_gen
    }
}

/// A send the kernel has finished with, and its buffers back.
#[derive(Debug)]
pub struct FinishedSend {
    /// The owner given when the send started.
    pub owner: u64,
    /// Bytes sent, or a negated errno.
    pub result: i32,
    /// Bytes handed to the kernel.
    pub len: usize,
    first: Bytes,
    rest: Vec<Bytes>,
}

impl FinishedSend {
    /// Whether the kernel took fewer bytes than it was given (the socket
    /// buffer filled).
    pub fn is_short(&self) -> bool {
        self.result >= 0 && (self.result as usize) < self.len
    }

    /// The bytes the kernel did not take, in order (nothing after a
    /// complete send or an error).
    pub fn unsent(self) -> impl DoubleEndedIterator<Item = Bytes> {
        let mut skip = if self.result >= 0 {
            self.result as usize
        } else {
            self.len
        };
        std::iter::once(self.first)
            .chain(self.rest)
            .filter_map(move |b| {
                if skip >= b.len() {
                    skip -= b.len();
                    None
                } else {
                    let rest = b.slice(skip..);
                    skip = 0;
                    Some(rest)
                }
            })
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// A client connection to open in one linked chain (see
/// `Ring::connect_chain`).
#[derive(Debug, Clone)]
pub struct ConnectChain {
    /// The direct-descriptor slot to create the socket in.
    pub slot: u32,
    /// Source address to bind, or none (the kernel picks).
    pub src: Option<SocketAddrV4>,
    /// Destination.
    pub dst: SocketAddrV4,
    /// The first bytes to send once connected.
    pub request: Bytes,
    /// Tags for the chain's links, in order: socket, socket options, bind,
    /// connect; the send is tagged as every owned send is.
    pub tags: [UserData; 4],
    /// The op code the final send's tag carries.
    pub send_op: u8,
    /// Returned by `Ring::finish_send` with the send's completion.
    pub owner: u64,
}

/// `SO_LINGER {on, 0}`: close sends RST and leaves no TIME_WAIT behind.
static LINGER_RST: libc::linger = libc::linger {
    l_onoff: 1,
    l_linger: 0,
};
static ONE: libc::c_int = 1;

impl Sends {
    /// Takes `first` and `rest` into the slab and builds the send that
    /// hands them to the kernel on the socket in `slot`: `SEND` for one
    /// buffer, `SENDMSG` for several. Returns the entry (tagged `op` with
    /// the send's own index) and the bytes it sends.
    pub(crate) fn start(
        &mut self,
        slot: u32,
        op: u8,
        owner: u64,
        first: Bytes,
        rest: Vec<Bytes>,
    ) -> (squeue::Entry, usize) {
        let len = first.len() + rest.iter().map(Bytes::len).sum::<usize>();
        let gen = self.gen();
        let entry = self.slab.vacant_entry();
        let tag = UserData::new(op, entry.key() as u32, gen);
        let (sqe, msg) = if rest.is_empty() {
            let sqe = opcode::Send::new(Fixed(slot), first.as_ptr(), first.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(tag.raw());
            (sqe, None)
        } else {
            // SAFETY: all-zero is a valid msghdr and iovec array.
            let mut msg: Box<MsgHdr> = Box::new(unsafe { std::mem::zeroed() });
            for (iov, b) in msg.iov.iter_mut().zip(std::iter::once(&first).chain(&rest)) {
                iov.iov_base = b.as_ptr().cast_mut().cast();
                iov.iov_len = b.len();
            }
            msg.hdr.msg_iov = msg.iov.as_mut_ptr();
            msg.hdr.msg_iovlen = 1 + rest.len();
            let sqe = opcode::SendMsg::new(Fixed(slot), &msg.hdr)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
                .user_data(tag.raw());
            (sqe, Some(msg))
        };
        // The buffers, the boxed header and its iovecs go into the slab
        // before the entry can be queued, and stay there until `finish`
        // removes them with the completion: `Bytes` data and a `Box`'s
        // contents never move, so the pointers above stay valid.
        entry.insert(InFlight {
            owner,
            gen,
            first,
            rest,
            len,
            _msg: msg,
            _addrs: None,
        });
        (sqe, len)
    }

    /// Takes a connect chain's request and addresses into the slab and
    /// builds its linked entries (see `Ring::connect_chain`).
    pub(crate) fn start_chain(&mut self, chain: ConnectChain) -> Vec<squeue::Entry> {
        let [t_socket, t_opt, t_bind, t_connect] = chain.tags;
        let link = squeue::Flags::IO_LINK;
        let quiet = link | squeue::Flags::SKIP_SUCCESS;
        let fd = Fixed(chain.slot);
        let addrs = Box::new(ChainAddrs {
            src: sockaddr_in(chain.src.unwrap_or(chain.dst)),
            dst: sockaddr_in(chain.dst),
        });
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let mut sqes = Vec::with_capacity(6);
        let dest = DestinationSlot::try_from_slot_target(chain.slot).expect("slot fits the table");
        // No SOCK_CLOEXEC: a direct IORING_OP_SOCKET refuses it (EINVAL).
        sqes.push(
            opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0)
                .file_index(Some(dest))
                .build()
                .flags(quiet)
                .user_data(t_socket.raw()),
        );
        for (name, value, size) in [
            (
                libc::SO_REUSEADDR,
                (&raw const ONE).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>(),
            ),
            (
                libc::SO_LINGER,
                (&raw const LINGER_RST).cast::<libc::c_void>(),
                std::mem::size_of::<libc::linger>(),
            ),
        ] {
            // The option values are statics.
            sqes.push(
                opcode::SetSockOpt::new(
                    fd,
                    libc::SOL_SOCKET as u32,
                    name as u32,
                    value,
                    size as u32,
                )
                .build()
                .flags(quiet)
                .user_data(t_opt.raw()),
            );
        }
        if chain.src.is_some() {
            sqes.push(
                opcode::Bind::new(fd, (&raw const addrs.src).cast(), len)
                    .build()
                    .flags(quiet)
                    .user_data(t_bind.raw()),
            );
        }
        sqes.push(
            opcode::Connect::new(fd, (&raw const addrs.dst).cast(), len)
                .build()
                .flags(link)
                .user_data(t_connect.raw()),
        );
        let gen = self.gen();
        let entry = self.slab.vacant_entry();
        let tag = UserData::new(chain.send_op, entry.key() as u32, gen);
        let request = chain.request;
        sqes.push(
            opcode::Send::new(fd, request.as_ptr(), request.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(tag.raw()),
        );
        // As in `start`: the request bytes and the boxed addresses stay in
        // the slab until the send — the last link, whose completion always
        // arrives — is finished.
        entry.insert(InFlight {
            owner: chain.owner,
            gen,
            len: request.len(),
            first: request,
            rest: Vec::new(),
            _msg: None,
            _addrs: Some(addrs),
        });
        sqes
    }

    /// Ends the send whose completion carried `tag` and `result`. `None`
    /// if no send in flight has that tag (a send finishes only once).
    pub(crate) fn finish(&mut self, tag: UserData, result: i32) -> Option<FinishedSend> {
        let index = tag.index() as usize;
        if self.slab.get(index).is_none_or(|s| s.gen != tag.gen()) {
            return None;
        }
        let done = self.slab.remove(index);
        Some(FinishedSend {
            owner: done.owner,
            result,
            len: done.len,
            first: done.first,
            rest: done.rest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(result: i32, bufs: &[&'static [u8]]) -> FinishedSend {
        let mut it = bufs.iter().map(|b| Bytes::from_static(b));
        let first = it.next().unwrap();
        let rest: Vec<Bytes> = it.collect();
        FinishedSend {
            owner: 0,
            result,
            len: bufs.iter().map(|b| b.len()).sum(),
            first,
            rest,
        }
    }

    #[test]
    fn unsent_is_what_the_kernel_did_not_take() {
        let all: Vec<Bytes> = finished(0, &[b"abc", b"de", b"f"]).unsent().collect();
        assert_eq!(all, [&b"abc"[..], b"de", b"f"]);
        let rest: Vec<Bytes> = finished(4, &[b"abc", b"de", b"f"]).unsent().collect();
        assert_eq!(rest, [&b"e"[..], b"f"]);
        assert!(finished(6, &[b"abc", b"de", b"f"])
            .unsent()
            .next()
            .is_none());
        assert!(
            finished(-32, &[b"abc"]).unsent().next().is_none(),
            "an error sends nothing more"
        );
        assert!(finished(2, &[b"abc"]).is_short());
    }
}
