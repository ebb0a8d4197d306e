//! Which cross-shard wake-up is cheaper: an eventfd write read by the
//! target's ring, or `IORING_OP_MSG_RING` into the target's ring?
//!
//! Two threads, each with a ring set up as ringcast sets up its rings
//! (`SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`), play ping-pong: each
//! round trip is one wake-up each way, with the receiver asleep in
//! `io_uring_enter` as an idle shard is. Reported: the median over rounds of
//! the mean round-trip time, and the sender's CPU cost per wake-up measured
//! separately as a burst of one-way signals (what a busy shard pays per
//! peer it wakes).
//!
//! `cargo run --release -p ringcast-uring --example wakeup [ROUNDS] [TRIPS]`

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};

fn ring() -> IoUring {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .build(64)
        .expect("io_uring")
}

fn eventfd() -> OwnedFd {
    // Non-blocking, as ringcast's doorbells are (a blocking eventfd read is
    // punted to an io-wq worker thread).
    // SAFETY: plain eventfd(2); the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0, "eventfd failed");
    // SAFETY: a fresh descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn signal(fd: i32) {
    let one = 1u64;
    // SAFETY: writes 8 bytes from a valid u64.
    let n = unsafe { libc::write(fd, (&raw const one).cast(), 8) };
    assert_eq!(n, 8);
}

/// Waits for one completion on `ring` and returns it.
fn wait(ring: &mut IoUring) -> io_uring::cqueue::Entry {
    loop {
        if let Some(c) = ring.completion().next() {
            return c;
        }
        ring.submit_and_wait(1).expect("io_uring_enter");
    }
}

/// Arms a read of `fd` into the leaked `buf`.
fn arm_read(ring: &mut IoUring, fd: i32, buf: *mut u64) {
    let e = opcode::Read::new(types::Fd(fd), buf.cast(), 8)
        .build()
        .user_data(1);
    // SAFETY: `buf` is leaked ('static) and so outlives the read.
    unsafe { ring.submission().push(&e).expect("sq has room") };
    ring.submit().expect("submit");
}

/// Mean round trip of `trips` eventfd ping-pongs.
fn eventfd_rtt(trips: u32) -> Duration {
    let (a_fd, b_fd) = (Arc::new(eventfd()), Arc::new(eventfd()));
    let start = Arc::new(Barrier::new(2));
    let b = {
        let (a_fd, b_fd, start) = (a_fd.clone(), b_fd.clone(), start.clone());
        std::thread::spawn(move || {
            let mut ring = ring();
            let buf: &'static mut u64 = Box::leak(Box::new(0));
            arm_read(&mut ring, b_fd.as_raw_fd(), buf);
            start.wait();
            for _ in 0..trips {
                wait(&mut ring);
                arm_read(&mut ring, b_fd.as_raw_fd(), buf);
                signal(a_fd.as_raw_fd());
            }
        })
    };
    let mut ring = ring();
    let buf: &'static mut u64 = Box::leak(Box::new(0));
    arm_read(&mut ring, a_fd.as_raw_fd(), buf);
    start.wait();
    let t = Instant::now();
    for _ in 0..trips {
        signal(b_fd.as_raw_fd());
        wait(&mut ring);
        arm_read(&mut ring, a_fd.as_raw_fd(), buf);
    }
    let elapsed = t.elapsed();
    b.join().unwrap();
    elapsed / trips
}

/// Mean round trip of `trips` MSG_RING ping-pongs.
fn msg_ring_rtt(trips: u32) -> Duration {
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Arc::new(Barrier::new(2));
    let mut a = ring();
    let a_fd = a.as_raw_fd();
    let b = {
        let start = start.clone();
        std::thread::spawn(move || {
            let mut ring = ring();
            tx.send(ring.as_raw_fd()).unwrap();
            start.wait();
            for _ in 0..trips {
                wait(&mut ring);
                let e = opcode::MsgRingData::new(types::Fd(a_fd), 0, 7, None)
                    .build()
                    .flags(io_uring::squeue::Flags::SKIP_SUCCESS);
                // SAFETY: the entry references no memory.
                unsafe { ring.submission().push(&e).unwrap() };
                ring.submit().unwrap();
            }
        })
    };
    let b_fd = rx.recv().unwrap();
    start.wait();
    let t = Instant::now();
    for _ in 0..trips {
        let e = opcode::MsgRingData::new(types::Fd(b_fd), 0, 7, None)
            .build()
            .flags(io_uring::squeue::Flags::SKIP_SUCCESS);
        // SAFETY: the entry references no memory.
        unsafe { a.submission().push(&e).unwrap() };
        a.submit().unwrap();
        wait(&mut a);
    }
    let elapsed = t.elapsed();
    b.join().unwrap();
    elapsed / trips
}

/// CPU cost to the sender of `n` one-way signals to a sleeping receiver.
fn sender_cost(n: u32, msg_ring: bool) -> Duration {
    let target = ring();
    let efd = eventfd();
    let mut me = ring();
    let t = Instant::now();
    for _ in 0..n {
        if msg_ring {
            let e = opcode::MsgRingData::new(types::Fd(target.as_raw_fd()), 0, 7, None)
                .build()
                .flags(io_uring::squeue::Flags::SKIP_SUCCESS);
            // SAFETY: the entry references no memory.
            unsafe { me.submission().push(&e).unwrap() };
            me.submit().unwrap();
        } else {
            signal(efd.as_raw_fd());
        }
    }
    let elapsed = t.elapsed();
    // Drain the target so its memory is released in order.
    let _ = target.submit_and_wait(0);
    elapsed / n
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let trips: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mut ev = Vec::new();
    let mut mr = Vec::new();
    let mut ev_send = Vec::new();
    let mut mr_send = Vec::new();
    for round in 0..rounds {
        ev.push(eventfd_rtt(trips));
        mr.push(msg_ring_rtt(trips));
        ev_send.push(sender_cost(trips, false));
        mr_send.push(sender_cost(trips, true));
        println!(
            "round {round}: round trip eventfd {:?}, MSG_RING {:?}; sender cost eventfd {:?}, MSG_RING {:?}",
            ev[round], mr[round], ev_send[round], mr_send[round]
        );
    }
    println!(
        "median of {rounds} rounds × {trips}: round trip eventfd {:?}, MSG_RING {:?}; sender cost per wake-up eventfd {:?}, MSG_RING {:?}",
        median(ev),
        median(mr),
        median(ev_send),
        median(mr_send)
    );
}
