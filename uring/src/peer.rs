//! The peer address of a socket held only as a direct descriptor.
//!
//! A multishot accept cannot report each connection's address (every shot
//! would write the same buffer), and a direct descriptor has no fd for
//! `getpeername(2)`. `getsockopt(SOL_SOCKET, SO_PEERNAME)` returns the same
//! address, and io_uring runs it on a direct descriptor as
//! `IORING_OP_URING_CMD` with `SOCKET_URING_OP_GETSOCKOPT` (Linux 6.7).
//!
//! The kernel writes the address into user memory when it runs the entry,
//! so each lookup in flight owns one entry of a fixed pool until its
//! completion is reaped. A lookup completes as soon as it is submitted
//! (the socket is already connected), so a small pool suffices; when it is
//! exhausted, [`PeerNames::request`] says so and the caller asks again
//! later.

use std::cell::UnsafeCell;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use io_uring::{opcode, squeue, types};

use crate::user_data::UserData;

/// Lookups a ring can have in flight.
pub const PEER_LOOKUPS: usize = 256;

/// `SOCKET_URING_OP_GETSOCKOPT` (include/uapi/linux/io_uring.h).
const SOCKET_URING_OP_GETSOCKOPT: u32 = 2;

/// Where lookups in flight land, and whose they are.
pub(crate) struct PeerNames {
    /// One target per lookup; the kernel writes it while the lookup is in
    /// flight, so it is only touched through raw pointers until then.
    targets: Box<[UnsafeCell<libc::sockaddr_in6>]>,
    /// The tag of the lookup using each target (`None`: free).
    owners: Vec<Option<u64>>,
    free: Vec<u16>,
}

impl PeerNames {
    pub(crate) fn new() -> PeerNames {
        PeerNames {
            // SAFETY: all-zero bytes are a valid `sockaddr_in6` (plain
            // integers and byte arrays).
            targets: (0..PEER_LOOKUPS)
                .map(|_| UnsafeCell::new(unsafe { std::mem::zeroed() }))
                .collect(),
            owners: vec![None; PEER_LOOKUPS],
            free: (0..PEER_LOOKUPS as u16).rev().collect(),
        }
    }

    /// The entry that asks for the peer address of the socket in `slot`
    /// (`ipv6`: the socket's family), tagged `tag`; `None` while every
    /// target is in use.
    pub(crate) fn request(
        &mut self,
        slot: u32,
        ipv6: bool,
        tag: UserData,
    ) -> Option<squeue::Entry> {
        let i = self.free.pop()?;
        self.owners[i as usize] = Some(tag.raw());
        let target = self.targets[i as usize].get();
        // SO_PEERNAME fails (EINVAL) when asked for more than the
        // address's own length, so ask for exactly the family's.
        let len = if ipv6 {
            std::mem::size_of::<libc::sockaddr_in6>()
        } else {
            std::mem::size_of::<libc::sockaddr_in>()
        };
        let set = opcode::SetSockOpt::new(
            types::Fixed(slot),
            libc::SOL_SOCKET as u32,
            libc::SO_PEERNAME as u32,
            target.cast_const().cast(),
            len as u32,
        )
        .build()
        .user_data(tag.raw());
        Some(as_getsockopt(set))
    }

    /// The address a completion tagged by [`PeerNames::request`] reports:
    /// `None` if it is not one of ours, `Some(Err(errno))` if the lookup
    /// failed. Frees its target.
    pub(crate) fn complete(
        &mut self,
        tag: UserData,
        result: i32,
    ) -> Option<Result<SocketAddr, i32>> {
        let i = self.owners.iter().position(|o| *o == Some(tag.raw()))?;
        self.owners[i] = None;
        self.free.push(i as u16);
        if result < 0 {
            return Some(Err(-result));
        }
        // SAFETY: the lookup that wrote this target has completed (its
        // completion is the one being handled), so the kernel no longer
        // writes it; no other lookup uses it until it is handed out again.
        let raw = unsafe { *self.targets[i].get() };
        Some(decode(&raw).ok_or(libc::EAFNOSUPPORT))
    }
}

/// Turns a `SOCKET_URING_OP_SETSOCKOPT` entry into the matching
/// `SOCKET_URING_OP_GETSOCKOPT`: the two take the same fields (level,
/// optname, optval, optlen), and the io-uring crate builds only the first.
fn as_getsockopt(set: squeue::Entry) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's 64-byte
    // `io_uring_sqe` (checked above), so it round-trips through a byte
    // array; `cmd_op` is the `u32` at offset 8 of that ABI-fixed layout,
    // and any value there is a valid bit pattern.
    unsafe {
        let mut raw: [u8; 64] = std::mem::transmute(set);
        raw[8..12].copy_from_slice(&SOCKET_URING_OP_GETSOCKOPT.to_ne_bytes());
        std::mem::transmute::<[u8; 64], squeue::Entry>(raw)
    }
}

fn decode(raw: &libc::sockaddr_in6) -> Option<SocketAddr> {
    match i32::from(raw.sin6_family) {
        libc::AF_INET6 => Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(raw.sin6_addr.s6_addr),
            u16::from_be(raw.sin6_port),
            raw.sin6_flowinfo,
            raw.sin6_scope_id,
        ))),
        libc::AF_INET => {
            // SAFETY: a `sockaddr_in` fits in a `sockaddr_in6` and has no
            // stricter alignment; the family says that is what was written.
            let v4 = unsafe { &*std::ptr::from_ref(raw).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_bounded_and_targets_come_back() {
        let mut p = PeerNames::new();
        for i in 0..PEER_LOOKUPS as u32 {
            assert!(p.request(i, false, UserData::new(1, i, 0)).is_some());
        }
        assert!(
            p.request(0, false, UserData::new(1, 999, 0)).is_none(),
            "exhausted"
        );
        assert!(p.complete(UserData::new(2, 0, 0), 0).is_none(), "not ours");
        assert_eq!(
            p.complete(UserData::new(1, 7, 0), -libc::ECANCELED),
            Some(Err(libc::ECANCELED))
        );
        assert!(
            p.request(0, false, UserData::new(1, 999, 0)).is_some(),
            "one came back"
        );
    }

    #[test]
    fn addresses_decode_by_family() {
        // SAFETY: all-zero bytes are a valid `sockaddr_in6`.
        let mut raw: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        raw.sin6_family = libc::AF_INET6 as u16;
        raw.sin6_port = 8080u16.to_be();
        raw.sin6_addr.s6_addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(decode(&raw), Some("[::1]:8080".parse().unwrap()));
        // SAFETY: as above, for the `sockaddr_in` view of the same bytes.
        let v4 = unsafe { &mut *std::ptr::from_mut(&mut raw).cast::<libc::sockaddr_in>() };
        v4.sin_family = libc::AF_INET as u16;
        v4.sin_port = 443u16.to_be();
        v4.sin_addr.s_addr = u32::from(Ipv4Addr::new(127, 0, 0, 9)).to_be();
        assert_eq!(decode(&raw), Some("127.0.0.9:443".parse().unwrap()));
        raw.sin6_family = libc::AF_UNIX as u16;
        assert_eq!(decode(&raw), None);
    }
}
