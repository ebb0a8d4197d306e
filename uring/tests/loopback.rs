//! The crate against real sockets on loopback: a server ring accepting,
//! receiving into provided buffers and sending owned buffers; a client
//! ring opening a connection with one linked chain.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringcast_uring::{sys, Completion, ConnectChain, Ring, RingConfig, TcpOption, UserData};

const ACCEPT: u8 = 1;
const RECV: u8 = 2;
const SEND: u8 = 3;
const CLOSE: u8 = 4;
const OTHER: u8 = 5;

fn ring() -> Ring {
    Ring::new(RingConfig {
        sq: 64,
        cq: 256,
        slots: 16,
        buffers: Some((8, 64)),
    })
    .expect("io_uring is available")
}

/// A ring and the completions reaped but not yet looked at.
struct Driven {
    ring: Ring,
    held: VecDeque<Completion>,
}

impl Driven {
    fn new() -> Driven {
        Driven {
            ring: ring(),
            held: VecDeque::new(),
        }
    }

    /// Reaps until a completion `pred` accepts arrives (within 5 s), and
    /// returns it; the others stay held for later calls.
    fn wait_for(&mut self, mut pred: impl FnMut(&Completion) -> bool) -> Completion {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        loop {
            if let Some(i) = self.held.iter().position(&mut pred) {
                return self.held.remove(i).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no matching completion in 5 s: {:?}",
                self.held
            );
            self.ring
                .submit_and_wait(Duration::from_millis(20))
                .unwrap();
            self.ring.flush_completions().unwrap();
            self.ring.reap(&mut out, 64);
            self.held.extend(out.drain(..));
        }
    }
}

#[test]
fn accepts_receives_and_sends_owned_buffers() {
    let listener = sys::reuseport_listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
    let addr = sys::local_addr(listener.as_raw_fd()).unwrap();
    let mut d = Driven::new();
    d.ring
        .accept_multi(listener.as_raw_fd(), UserData::new(ACCEPT, 0, 0));
    d.ring.submit().unwrap();

    let mut client = TcpStream::connect(addr).unwrap();
    let accepted = d.wait_for(|c| c.user_data().op() == ACCEPT);
    assert!(accepted.more(), "multishot accept stays armed");
    let slot = accepted.result() as u32;

    // TCP options: success posts nothing, a bad slot posts its error.
    d.ring
        .set_tcp_option(slot, TcpOption::NoDelay, UserData::new(OTHER, slot, 2));
    let lowat = TcpOption::NotSentLowat(64 * 1024);
    d.ring
        .set_tcp_option(slot, lowat, UserData::new(OTHER, slot, 2));
    d.ring
        .set_tcp_option(15, TcpOption::NoDelay, UserData::new(OTHER, 15, 3));
    let failed = d.wait_for(|c| c.user_data() == UserData::new(OTHER, 15, 3));
    assert_eq!(failed.result(), -9, "EBADF for an empty slot");

    // The peer's address, from the direct descriptor; a lookup on an empty
    // slot fails with its errno.
    assert!(d.ring.peer_name(slot, false, UserData::new(OTHER, slot, 4)));
    let named = d.wait_for(|c| c.user_data() == UserData::new(OTHER, slot, 4));
    let peer = d
        .ring
        .take_peer_name(&named)
        .expect("a peer-name completion");
    assert_eq!(peer, Ok(client.local_addr().unwrap()));
    assert!(d.ring.take_peer_name(&named).is_none(), "reported once");
    assert!(d.ring.peer_name(14, false, UserData::new(OTHER, 14, 5)));
    let failed = d.wait_for(|c| c.user_data() == UserData::new(OTHER, 14, 5));
    assert_eq!(d.ring.take_peer_name(&failed), Some(Err(libc::EBADF)));

    d.ring.recv_multi(slot, UserData::new(RECV, slot, 1));
    client.write_all(b"hello").unwrap();
    let mut got = d.wait_for(|c| c.user_data().op() == RECV);
    assert_eq!(got.user_data().gen(), 1);
    let mut buf = got
        .take_buffer()
        .expect("a receive fills a provided buffer");
    assert_eq!(buf.bytes(), b"hello");
    drop(buf);
    assert_eq!(
        d.ring.recycle_buffers(),
        1,
        "a dropped buffer goes back to the kernel"
    );

    let mut queue: VecDeque<Bytes> = [&b"one "[..], b"two ", b"three"]
        .into_iter()
        .map(Bytes::from_static)
        .collect();
    assert_eq!(d.ring.send_from(slot, SEND, 42, &mut queue), 13);
    assert!(queue.is_empty());
    let sent = d.wait_for(|c| c.user_data().op() == SEND);
    let done = d.ring.finish_send(&sent).expect("a send in flight");
    assert_eq!((done.owner, done.result, done.len), (42, 13, 13));
    assert!(d.ring.finish_send(&sent).is_none(), "a send finishes once");
    let mut reply = [0u8; 13];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"one two three");

    d.ring.shutdown_and_close(
        slot,
        UserData::new(OTHER, slot, 1),
        UserData::new(CLOSE, slot, 1),
    );
    let closed = d.wait_for(|c| c.user_data().op() == CLOSE);
    assert_eq!(closed.result(), 0);
    assert!(
        !d.held
            .iter()
            .any(|c| c.user_data() == UserData::new(OTHER, slot, 2)),
        "setting TCP_NODELAY on the accepted socket succeeded silently"
    );
    let mut rest = Vec::new();
    assert_eq!(
        client.read_to_end(&mut rest).unwrap(),
        0,
        "the peer sees EOF"
    );
}

#[test]
fn a_connect_chain_opens_a_connection_and_sends_the_request() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let SocketAddr::V4(dst) = listener.local_addr().unwrap() else {
        unreachable!()
    };
    let mut d = Driven::new();
    let tags = [1, 2, 3, 4].map(|op| UserData::new(op + 10, 3, 7));
    d.ring.connect_chain(ConnectChain {
        slot: 3,
        src: None,
        dst,
        request: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
        tags,
        send_op: SEND,
        owner: 99,
    });
    d.ring.submit().unwrap();
    // The peer accepts and reads on its own thread: links after the first
    // run as deferred task work, i.e. only while this thread reaps.
    let peer = std::thread::spawn(move || {
        let (mut server, _) = listener.accept().unwrap();
        let mut req = [0u8; 18];
        server.read_exact(&mut req).unwrap();
        req
    });
    let connected = d.wait_for(|c| c.user_data() == tags[3]);
    assert_eq!(connected.result(), 0);
    let sent = d.wait_for(|c| c.user_data().op() == SEND);
    let done = d.ring.finish_send(&sent).unwrap();
    assert_eq!((done.owner, done.result), (99, 18));
    let req = peer.join().unwrap();
    assert_eq!(&req, b"GET / HTTP/1.1\r\n\r\n");

    // A refused connection (nobody listens any more): the connect fails,
    // the send is cancelled, and its buffers still come back.
    d.ring.connect_chain(ConnectChain {
        slot: 4,
        src: None,
        dst,
        request: Bytes::from_static(b"x"),
        tags: [1, 2, 3, 4].map(|op| UserData::new(op + 10, 4, 8)),
        send_op: SEND,
        owner: 100,
    });
    d.ring.submit().unwrap();
    let sent = d.wait_for(|c| c.user_data().op() == SEND);
    let done = d.ring.finish_send(&sent).unwrap();
    assert_eq!((done.owner, done.result), (100, -ECANCELED));
}

const ECANCELED: i32 = 125;
