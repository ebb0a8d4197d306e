//! The store against real files: every test opens real fjall databases in
//! its own directory under the system temp dir, removed afterwards. The
//! crash tests re-execute this test binary as a child that publishes until
//! the parent kills it with SIGKILL.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::codec::{BootId, FsyncKind, RunMarker};
use super::recovery::choose_epoch;
use super::*;
use crate::hub::Epoch;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    Durable {
        shard: usize,
        upto: u64,
    },
    Failed {
        shard: usize,
        after: u64,
        reason: String,
    },
}

/// Reports into a channel the test reads.
struct ToChannel(mpsc::Sender<Report>);

impl Reports for ToChannel {
    fn durable(&self, shard: usize, upto: u64) {
        let _ = self.0.send(Report::Durable { shard, upto });
    }

    fn failed(&self, shard: usize, after: u64, reason: &Arc<str>) {
        let _ = self.0.send(Report::Failed {
            shard,
            after,
            reason: reason.to_string(),
        });
    }
}

/// A directory of its own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ringcast-store-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn everything(_: &ChannelName) -> usize {
    usize::MAX
}

fn open_with(dir: &Path, options: Options) -> Result<(Opened, mpsc::Receiver<Report>), StoreError> {
    let (tx, rx) = mpsc::channel();
    let opened = Store::open(dir, options, Box::new(ToChannel(tx)), &everything)?;
    Ok((opened, rx))
}

fn open(dir: &Path, fsync: Fsync, shards: usize) -> (Opened, mpsc::Receiver<Report>) {
    open_with(dir, Options::new(fsync, shards)).expect("open the store")
}

fn ch(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

fn msg(channel: &str, seq: u64, payload: &str) -> Record {
    Record::Message {
        channel: ch(channel),
        seq,
        kind: DataKind::Text,
        published_ms: 1_700_000_000_000 + seq,
        payload: Bytes::from(payload.to_owned()),
    }
}

/// `(seq, payload)` of a recovered channel; empty if it is not there.
fn stored(recovered: &Recovered, channel: &str) -> Vec<(u64, String)> {
    recovered
        .channels
        .iter()
        .find(|c| c.name.as_str() == channel)
        .map(|c| {
            c.messages
                .iter()
                .map(|m| (m.seq, String::from_utf8_lossy(&m.payload).into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn channel<'a>(recovered: &'a Recovered, name: &str) -> Option<&'a RecoveredChannel> {
    recovered.channels.iter().find(|c| c.name.as_str() == name)
}

/// Reads reports until every `(shard, ticket)` of `want` is reported
/// durable; fails on a failure report or after 20 s.
fn until_durable(rx: &mpsc::Receiver<Report>, want: &[(usize, u64)]) -> Vec<Report> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut best: HashMap<usize, u64> = HashMap::new();
    while !want
        .iter()
        .all(|(s, t)| best.get(s).is_some_and(|b| b >= t))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let report = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no durable report for {want:?}; got {got:?}"));
        match &report {
            Report::Durable { shard, upto } => {
                best.insert(*shard, *upto);
            }
            Report::Failed { .. } => panic!("unexpected {report:?}"),
        }
        got.push(report);
    }
    got
}

#[test]
fn fsync_policies_parse_and_print() {
    for (text, policy) in [
        ("always", Fsync::Always),
        ("never", Fsync::Never),
        ("interval", Fsync::Interval(Duration::from_millis(100))),
        ("interval:250", Fsync::Interval(Duration::from_millis(250))),
        ("interval:1", Fsync::Interval(Duration::from_millis(1))),
        ("interval:60000", Fsync::Interval(Duration::from_secs(60))),
    ] {
        assert_eq!(text.parse::<Fsync>(), Ok(policy), "{text}");
        assert_eq!(policy.to_string().parse::<Fsync>(), Ok(policy));
    }
    assert_eq!(
        Fsync::Interval(DEFAULT_INTERVAL).to_string(),
        "interval:100"
    );
    for bad in ["sometimes", "Always", "", "interval;5", "always:1"] {
        let e = bad.parse::<Fsync>().unwrap_err();
        assert_eq!(
            e,
            format!("fsync policy must be always, interval, interval:<ms> or never, not {bad:?}")
        );
    }
    for bad in [
        "interval:",
        "interval:0",
        "interval:abc",
        "interval:60001",
        "interval:-5",
    ] {
        let e = bad.parse::<Fsync>().unwrap_err();
        assert!(
            e.starts_with("fsync interval must be a whole number of milliseconds from 1 to 60000"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn epoch_rule_truth_table() {
    let e = Some(Epoch::from_bits(0xabc));
    let boot = BootId([7; 16]);
    let other = BootId([8; 16]);
    let run = |clean, policy, boot| {
        Some(RunMarker {
            clean,
            policy,
            boot,
        })
    };
    use EpochChoice::*;
    use FsyncKind::*;
    let table = [
        // No epoch stored: always a new one.
        (None, None, boot, Fresh),
        (None, run(true, Always, boot), boot, Fresh),
        (None, run(false, Never, boot), boot, Fresh),
        // An epoch but no record of how the run ended.
        (e, None, boot, NoRunMarker),
        // Clean: kept, whatever the policy or boot.
        (e, run(true, Always, boot), other, Kept),
        (e, run(true, Interval, other), boot, Kept),
        (e, run(true, Never, boot), other, Kept),
        // Unclean at always: everything reported was fsynced.
        (e, run(false, Always, boot), boot, Kept),
        (e, run(false, Always, other), boot, Kept),
        // Unclean at interval: kept only on the same known boot.
        (e, run(false, Interval, boot), boot, Kept),
        (
            e,
            run(false, Interval, other),
            boot,
            UncleanIntervalAcrossReboot,
        ),
        (
            e,
            run(false, Interval, BootId::UNKNOWN),
            BootId::UNKNOWN,
            UncleanIntervalAcrossReboot,
        ),
        (
            e,
            run(false, Interval, boot),
            BootId::UNKNOWN,
            UncleanIntervalAcrossReboot,
        ),
        // Unclean at never: always a new one.
        (e, run(false, Never, boot), boot, UncleanNever),
        (e, run(false, Never, other), boot, UncleanNever),
    ];
    for (stored, previous, now, want) in table {
        let got = choose_epoch(stored, previous, now);
        assert_eq!(
            got, want,
            "stored {stored:?}, previous {previous:?}, boot {now:?}"
        );
        assert_eq!(got.is_new(), want != Kept);
    }
}

/// Everything queued while the writer was busy goes into one commit, and
/// each shard hears once, with its highest ticket.
#[test]
fn group_commit_takes_everything_queued_into_one_commit() {
    let dir = TempDir::new("group");
    let (opened, rx) = open(dir.path(), Fsync::Always, 2);
    let Opened {
        store,
        mut intakes,
        recovered,
    } = opened;
    assert_eq!(recovered.choice, EpochChoice::Fresh);
    assert!(store.pause_writer());
    let mut seq = [0u64; 2];
    for (shard, tickets) in [(0usize, 50u64), (1, 30)] {
        for t in 1..=tickets {
            let name = ["a", "b"][shard];
            let records = (0..2)
                .map(|i| {
                    seq[shard] += 1;
                    msg(name, seq[shard], &format!("{shard}:{t}:{i}"))
                })
                .collect();
            assert_eq!(intakes[shard].submit(records), Ok(Some(t)));
        }
        assert_eq!(intakes[shard].next_ticket(), tickets + 1);
    }
    assert_eq!(store.stats().queued_records, 160);
    store.resume_writer();
    let mut reports = until_durable(&rx, &[(0, 50), (1, 30)]);
    reports.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        reports,
        [
            Report::Durable { shard: 0, upto: 50 },
            Report::Durable { shard: 1, upto: 30 }
        ]
    );
    let stats = store.stats();
    assert_eq!((stats.commits, stats.records), (1, 160));
    assert_eq!((stats.queued_records, stats.queued_bytes), (0, 0));
    store.shutdown().unwrap();

    let (reopened, _rx) = open(dir.path(), Fsync::Always, 2);
    let r = &reopened.recovered;
    assert_eq!(r.epoch, recovered.epoch);
    assert_eq!(r.previous, Previous::Clean(FsyncKind::Always));
    assert_eq!(r.floor, 100);
    let want = |shard: usize, tickets: u64| -> Vec<(u64, String)> {
        (1..=tickets)
            .flat_map(|t| (0..2).map(move |i| format!("{shard}:{t}:{i}")))
            .enumerate()
            .map(|(n, p)| (n as u64 + 1, p))
            .collect()
    };
    assert_eq!(stored(r, "a"), want(0, 50));
    assert_eq!(stored(r, "b"), want(1, 30));
    reopened.store.shutdown().unwrap();
}

/// A backlog bigger than a commit is split at submission boundaries, in
/// ticket order; one submission bigger than the cap is never split.
#[test]
fn commit_caps_split_a_backlog_in_ticket_order() {
    let dir = TempDir::new("caps");
    let options = Options {
        commit_records: 10,
        ..Options::new(Fsync::Never, 1)
    };
    let (opened, rx) = open_with(dir.path(), options).unwrap();
    let Opened {
        store, mut intakes, ..
    } = opened;
    assert!(store.pause_writer());
    for seq in 1..=25 {
        intakes[0].submit(vec![msg("a", seq, "x")]).unwrap();
    }
    store.resume_writer();
    assert_eq!(
        until_durable(&rx, &[(0, 25)]),
        [10, 20, 25].map(|upto| Report::Durable { shard: 0, upto })
    );
    assert!(store.pause_writer());
    intakes[0]
        .submit((26..=40).map(|s| msg("a", s, "x")).collect())
        .unwrap();
    intakes[0].submit(vec![msg("a", 41, "x")]).unwrap();
    store.resume_writer();
    assert_eq!(
        until_durable(&rx, &[(0, 27)]),
        [26, 27].map(|upto| Report::Durable { shard: 0, upto })
    );
    assert_eq!(store.stats().commits, 5);
    store.shutdown().unwrap();
}

/// Two shards publishing as fast as they can, unpaused: each shard's
/// reports increase and end at its last ticket, and after a restart every
/// message is there, in order.
#[test]
fn two_shards_streaming_get_increasing_reports_and_keep_everything() {
    let dir = TempDir::new("stream");
    let (opened, rx) = open(dir.path(), Fsync::Always, 2);
    let Opened { store, intakes, .. } = opened;
    const TICKETS: u64 = 400;
    let producers: Vec<_> = intakes
        .into_iter()
        .map(|mut intake| {
            std::thread::spawn(move || {
                let mut script = Script::new(intake.shard());
                for t in 1..=TICKETS {
                    let ticket = intake.submit(script.records(t)).unwrap();
                    assert_eq!(ticket, Some(t));
                }
                intake
            })
        })
        .collect();
    let _intakes: Vec<Intake> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    let reports = until_durable(&rx, &[(0, TICKETS), (1, TICKETS)]);
    for shard in 0..2 {
        let tickets: Vec<u64> = reports
            .iter()
            .filter_map(|r| match r {
                Report::Durable { shard: s, upto } if *s == shard => Some(*upto),
                _ => None,
            })
            .collect();
        assert!(tickets.windows(2).all(|w| w[0] < w[1]), "{tickets:?}");
        assert_eq!(tickets.last(), Some(&TICKETS));
    }
    let commits = store.stats().commits;
    store.shutdown().unwrap();
    let (reopened, _rx) = open(dir.path(), Fsync::Always, 2);
    for shard in 0..2 {
        check_script(&reopened.recovered, shard, TICKETS, Some(TICKETS));
    }
    reopened.store.shutdown().unwrap();
    eprintln!("2 × {TICKETS} tickets in {commits} commits");
}

/// A graceful shutdown and restart keeps the epoch and every message at
/// every policy; the interval policy fsyncs on its own meanwhile.
#[test]
fn graceful_restart_keeps_epoch_and_messages_at_every_policy() {
    for fsync in [
        Fsync::Always,
        Fsync::Interval(Duration::from_millis(20)),
        Fsync::Never,
    ] {
        let dir = TempDir::new("graceful");
        let (opened, rx) = open(dir.path(), fsync, 2);
        let Opened {
            store,
            mut intakes,
            recovered,
        } = opened;
        assert_eq!(recovered.previous, Previous::None);
        assert!(recovered.channels.is_empty());
        let first_epoch = recovered.epoch;
        for intake in &mut intakes {
            let mut script = Script::new(intake.shard());
            for t in 1..=20 {
                intake.submit(script.records(t)).unwrap();
            }
        }
        until_durable(&rx, &[(0, 20), (1, 20)]);
        if let Fsync::Interval(every) = fsync {
            let deadline = Instant::now() + Duration::from_secs(10);
            while store.stats().syncs == 0 && Instant::now() < deadline {
                std::thread::sleep(every);
            }
            assert!(store.stats().syncs >= 1, "{fsync}: no interval fsync");
        } else {
            assert_eq!(store.stats().syncs, 0, "{fsync}");
        }
        store.shutdown().unwrap();
        assert_eq!(
            intakes[0].submit(vec![msg("late", 1, "x")]),
            Err(Refused::Closed)
        );

        for round in 0..2 {
            let (again, _rx) = open(dir.path(), fsync, 2);
            let r = &again.recovered;
            assert_eq!(r.epoch, first_epoch, "{fsync}, round {round}");
            assert_eq!(r.choice, EpochChoice::Kept, "{fsync}");
            assert_eq!(r.previous, Previous::Clean(fsync.kind()), "{fsync}");
            for shard in 0..2 {
                check_script(r, shard, 20, Some(20));
            }
            again.store.shutdown().unwrap();
        }
    }
}

/// Records of a crash test, per shard and ticket: 1–3 messages over two
/// channels of the shard, payloads naming shard, ticket and index, with
/// filler of varying length. The parent regenerates exactly what the child
/// submitted.
struct Script {
    shard: usize,
    next: [u64; 2],
}

impl Script {
    fn new(shard: usize) -> Script {
        Script {
            shard,
            next: [1; 2],
        }
    }

    fn channel(shard: usize, which: usize) -> String {
        format!("s{shard}-{}", ["a", "b"][which])
    }

    /// `(channel index, seq, payload)` of ticket `t`.
    fn entries(&mut self, t: u64) -> Vec<(usize, u64, String)> {
        (0..1 + t % 3)
            .map(|i| {
                let which = ((t + i) % 2) as usize;
                let seq = self.next[which];
                self.next[which] += 1;
                let filler = "x".repeat((t * 7 % 200) as usize);
                (which, seq, format!("{}:{t}:{i}:{filler}", self.shard))
            })
            .collect()
    }

    fn records(&mut self, t: u64) -> Vec<Record> {
        let shard = self.shard;
        self.entries(t)
            .into_iter()
            .map(|(which, seq, payload)| msg(&Script::channel(shard, which), seq, &payload))
            .collect()
    }
}

/// Checks that what `r` holds of `shard`'s script is exactly tickets
/// `1..=k` for some `k` (commits are atomic and in order), that
/// `k ≥ durable` (every ticket reported is there), and returns `k`.
/// `at_most` bounds `k` when the test knows the last ticket submitted.
fn check_script(r: &Recovered, shard: usize, durable: u64, at_most: Option<u64>) -> u64 {
    let have: Vec<Vec<(u64, String)>> = (0..2)
        .map(|w| stored(r, &Script::channel(shard, w)))
        .collect();
    let total: usize = have.iter().map(Vec::len).sum();
    let mut script = Script::new(shard);
    let mut want: [Vec<(u64, String)>; 2] = [Vec::new(), Vec::new()];
    let mut k = 0;
    while want[0].len() + want[1].len() < total {
        k += 1;
        for (which, seq, payload) in script.entries(k) {
            want[which].push((seq, payload));
        }
    }
    for w in 0..2 {
        assert_eq!(
            have[w], want[w],
            "shard {shard} channel {w}: not exactly tickets 1..={k}"
        );
    }
    assert!(
        k >= durable,
        "shard {shard}: ticket {durable} was reported durable, only 1..={k} stored"
    );
    if let Some(max) = at_most {
        assert!(
            k <= max,
            "shard {shard}: {k} tickets stored, {max} submitted"
        );
    }
    k
}

/// Set in the child of a crash test: `<policy>|<dir>`.
const CRASH_CHILD: &str = "RINGCAST_STORE_CRASH_CHILD";

/// The child: opens the store, prints its epoch, then two threads submit
/// the script as fast as the queue takes it; the writer prints every
/// durable report. It never ends by itself before the parent kills it
/// (a 20 s guard aborts it if the parent went away).
fn crash_child(spec: &str) -> ! {
    struct Print;
    impl Reports for Print {
        fn durable(&self, shard: usize, upto: u64) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "DURABLE {shard} {upto}");
            let _ = out.flush();
        }
        fn failed(&self, shard: usize, after: u64, reason: &Arc<str>) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "FAILED {shard} {after} {reason}");
            let _ = out.flush();
        }
    }
    let (policy, dir) = spec.split_once('|').expect("policy|dir");
    let fsync: Fsync = policy.parse().expect("policy");
    let opened = Store::open(
        Path::new(dir),
        Options::new(fsync, 2),
        Box::new(Print),
        &everything,
    )
    .expect("child opens the store");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "EPOCH {}", opened.recovered.epoch.bits());
        let _ = out.flush();
    }
    let started = Instant::now();
    let producers: Vec<_> = opened
        .intakes
        .into_iter()
        .map(|mut intake| {
            std::thread::spawn(move || {
                let mut script = Script::new(intake.shard());
                for t in 1.. {
                    let records = script.records(t);
                    loop {
                        match intake.try_submit(records.clone()) {
                            Ok(_) => break,
                            Err(Refused::Busy { .. }) => {
                                std::thread::sleep(Duration::from_millis(1))
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    if started.elapsed() > Duration::from_secs(20) {
                        std::process::abort();
                    }
                }
            })
        })
        .collect();
    for p in producers {
        let _ = p.join();
    }
    std::process::abort();
}

/// The parent: runs the child for `test` at `policy`, SIGKILLs it once
/// both shards have had 100 tickets reported durable, then reopens the
/// directory. Returns the child's epoch, the highest ticket reported per
/// shard, and what the reopened store holds.
fn crash_parent(test: &str, policy: Fsync) -> (Epoch, [u64; 2], Recovered) {
    let dir = TempDir::new("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CRASH_CHILD, format!("{policy}|{}", dir.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut epoch = None;
    let mut durable = [0u64; 2];
    let mut killed = false;
    loop {
        let line = match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() > deadline && !killed {
                    let _ = child.kill();
                    panic!("child made no progress: epoch {epoch:?}, durable {durable:?}");
                }
                continue;
            }
            // Its stdout closed: it is dead.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        // The harness prints "test <name> ... " without a newline before
        // the test runs, so a marker need not start its line.
        let start = ["EPOCH ", "DURABLE ", "FAILED "]
            .iter()
            .filter_map(|m| line.find(m))
            .min();
        let Some(start) = start else { continue };
        let words: Vec<&str> = line[start..].split(' ').collect();
        match words[..] {
            ["EPOCH", bits] => epoch = Some(Epoch::from_bits(bits.parse().unwrap())),
            ["DURABLE", shard, upto] => {
                let shard: usize = shard.parse().unwrap();
                let upto: u64 = upto.parse().unwrap();
                assert!(upto > durable[shard], "{line} after {durable:?}");
                durable[shard] = upto;
            }
            ["FAILED", ..] => panic!("child: {line}"),
            _ => continue, // the test harness's own lines
        }
        if !killed && durable.iter().all(|&d| d >= 100) {
            // SIGKILL, mid-stream: both producers and the writer are busy.
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(killed, "child ended by itself: {status}");
    let epoch = epoch.expect("the child printed its epoch");
    let (reopened, _rx) = open(dir.path(), policy, 2);
    let Opened {
        store, recovered, ..
    } = reopened;
    assert_eq!(recovered.previous, Previous::Unclean(policy.kind()));
    store.shutdown().unwrap();
    (epoch, durable, recovered)
}

/// One kill test: in the child (re-executed test binary), the publish
/// loop; in the parent, the kill, the reopen, and the check that every
/// ticket reported durable is stored, in order. Returns the epoch the
/// child ran under and what the reopen recovered.
fn kill_9(test: &str, policy: Fsync) -> (Epoch, Recovered) {
    if let Ok(spec) = std::env::var(CRASH_CHILD) {
        crash_child(&spec);
    }
    let (epoch, durable, r) = crash_parent(test, policy);
    for (shard, &reported) in durable.iter().enumerate() {
        let stored = check_script(&r, shard, reported, None);
        eprintln!("shard {shard}: tickets 1..={reported} reported durable, 1..={stored} stored");
    }
    (epoch, r)
}

#[test]
fn kill_9_at_always_keeps_every_durable_ticket_and_the_epoch() {
    let (epoch, r) = kill_9(
        "store::tests::kill_9_at_always_keeps_every_durable_ticket_and_the_epoch",
        Fsync::Always,
    );
    assert_eq!(r.epoch, epoch);
    assert_eq!(r.choice, EpochChoice::Kept);
}

/// `interval` writes every commit to the kernel before reporting it, so a
/// process crash loses nothing reported, and on the same boot the epoch
/// stays.
#[test]
fn kill_9_at_interval_keeps_every_durable_ticket_and_the_epoch() {
    let (epoch, r) = kill_9(
        "store::tests::kill_9_at_interval_keeps_every_durable_ticket_and_the_epoch",
        Fsync::Interval(Duration::from_millis(50)),
    );
    assert_eq!(r.epoch, epoch);
    assert_eq!(r.choice, EpochChoice::Kept);
}

/// `never` promises nothing across a crash, so the epoch changes; what is
/// stored is still whole commits, in order.
#[test]
fn kill_9_at_never_changes_the_epoch() {
    let (epoch, r) = kill_9(
        "store::tests::kill_9_at_never_changes_the_epoch",
        Fsync::Never,
    );
    assert_ne!(r.epoch, epoch);
    assert_eq!(r.choice, EpochChoice::UncleanNever);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_by_name() {
    let dir = TempDir::new("lock");
    let (first, _rx) = open(dir.path(), Fsync::Always, 1);
    let err = open_with(dir.path(), Options::new(Fsync::Always, 1)).unwrap_err();
    assert_eq!(
        err,
        StoreError::InUse {
            dir: dir.path().to_path_buf()
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "data directory {} is in use by another process (lock held)",
            dir.path().display()
        )
    );
    // Dropped without shutdown: the writer still closes cleanly and lets go.
    let epoch = first.recovered.epoch;
    drop(first);
    let (second, _rx) = open(dir.path(), Fsync::Always, 1);
    assert_eq!(
        second.recovered.previous,
        Previous::Clean(FsyncKind::Always)
    );
    assert_eq!(second.recovered.epoch, epoch);
    second.store.shutdown().unwrap();
}

#[test]
fn an_unopenable_directory_is_named_with_the_os_error() {
    let dir = TempDir::new("unopenable");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let target = file.join("data");
    let err = open_with(&target, Options::new(Fsync::Always, 1)).unwrap_err();
    assert!(matches!(err, StoreError::CannotOpen { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot open data directory {}: Not a directory (os error 20)",
            target.display()
        )
    );
}

/// Writes `value` under `key` in `keyspace` of a closed store, with fjall
/// directly: how a newer build or a bad disk would leave it.
fn tamper(dir: &Path, keyspace: &str, key: &[u8], value: &[u8]) {
    let db = fjall::Database::builder(dir).open().unwrap();
    let ks = db
        .keyspace(keyspace, fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let mut batch = db.batch().durability(Some(fjall::PersistMode::SyncAll));
    batch.insert(&ks, key, value);
    batch.commit().unwrap();
}

#[test]
fn a_store_of_a_newer_format_is_refused() {
    let dir = TempDir::new("format");
    let (opened, _rx) = open(dir.path(), Fsync::Always, 1);
    opened.store.shutdown().unwrap();
    tamper(dir.path(), "meta", codec::META_FORMAT, &2u32.to_be_bytes());
    let err = open_with(dir.path(), Options::new(Fsync::Always, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "data directory {} was written by a newer ringcast (store format 2; this build reads 1)",
            dir.path().display()
        )
    );
}

#[test]
fn a_corrupt_value_is_refused_naming_its_key() {
    let dir = TempDir::new("corrupt");
    let (opened, rx) = open(dir.path(), Fsync::Always, 1);
    let Opened {
        store, mut intakes, ..
    } = opened;
    intakes[0].submit(vec![msg("room", 1, "hello")]).unwrap();
    until_durable(&rx, &[(0, 1)]);
    store.shutdown().unwrap();
    tamper(
        dir.path(),
        "msgs",
        &codec::msg_key("room", 1),
        b"\x09junk-and-more",
    );
    let err = open_with(dir.path(), Options::new(Fsync::Always, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "data directory {} is corrupt: msgs key room\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x01: \
             message value version 9 (this build writes 1)",
            dir.path().display()
        )
    );
}

/// An injected `ENOSPC`: every shard with records in that commit hears
/// `failed` with its last stored ticket, the store refuses from then on,
/// and after a restart exactly the earlier commits are there.
#[test]
fn a_failed_commit_reports_the_last_stored_ticket_and_refuses_later_work() {
    let dir = TempDir::new("fault");
    let (opened, rx) = open(dir.path(), Fsync::Always, 2);
    let Opened {
        store,
        mut intakes,
        recovered,
    } = opened;
    // One commit each, so the count below is exact.
    intakes[0].submit(vec![msg("a", 1, "one")]).unwrap();
    until_durable(&rx, &[(0, 1)]);
    intakes[1].submit(vec![msg("b", 1, "one")]).unwrap();
    until_durable(&rx, &[(1, 1)]);

    assert!(store.pause_writer());
    store.fail_next_commit(libc::ENOSPC);
    intakes[0].submit(vec![msg("a", 2, "two")]).unwrap();
    intakes[0].submit(vec![msg("a", 3, "three")]).unwrap();
    intakes[1].submit(vec![msg("b", 2, "two")]).unwrap();
    store.resume_writer();
    let reason = format!(
        "writing to data directory {} failed: No space left on device (os error 28)",
        dir.path().display()
    );
    let mut failures: Vec<Report> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap())
        .collect();
    failures.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        failures,
        [0, 1].map(|shard| Report::Failed {
            shard,
            after: 1,
            reason: reason.clone()
        })
    );
    assert_eq!(store.failed().as_deref(), Some(reason.as_str()));
    let refused = Refused::Failed(reason.as_str().into());
    assert_eq!(intakes[0].check(), Err(refused.clone()));
    assert_eq!(
        intakes[0].submit(vec![msg("a", 4, "four")]),
        Err(refused.clone())
    );
    assert_eq!(
        intakes[1].try_submit(vec![msg("b", 3, "x")]),
        Err(refused.clone())
    );
    assert_eq!(
        refused.to_string(),
        format!("store unavailable: {reason}; retry later")
    );
    let stats = store.stats();
    assert_eq!((stats.commits, stats.queued_records), (2, 0));
    let err = store.shutdown().unwrap_err();
    assert_eq!(err.to_string(), reason);

    let (again, _rx) = open(dir.path(), Fsync::Always, 2);
    let r = &again.recovered;
    assert_eq!(r.previous, Previous::Unclean(FsyncKind::Always));
    assert_eq!(r.epoch, recovered.epoch);
    assert_eq!(stored(r, "a"), [(1, "one".to_string())]);
    assert_eq!(stored(r, "b"), [(1, "one".to_string())]);
    again.store.shutdown().unwrap();
}

/// A trim deletes the stored seqs below it and advances `first_seq`; a
/// trim past the end empties the channel, which continues where it was;
/// a restart loads only the newest `limit_for` messages.
#[test]
fn trims_delete_below_and_advance_first_seq() {
    let dir = TempDir::new("trim");
    let (opened, rx) = open(dir.path(), Fsync::Always, 1);
    let Opened {
        store, mut intakes, ..
    } = opened;
    let mut records: Vec<Record> = (1..=10).map(|s| msg("a", s, &format!("a{s}"))).collect();
    records.extend((1..=3).map(|s| msg("b", s, &format!("b{s}"))));
    intakes[0].submit(records).unwrap();
    intakes[0]
        .submit(vec![
            Record::Trim {
                channel: ch("a"),
                below_seq: 6,
            },
            Record::Trim {
                channel: ch("b"),
                below_seq: 99,
            },
            Record::Trim {
                channel: ch("never-stored"),
                below_seq: 5,
            },
        ])
        .unwrap();
    until_durable(&rx, &[(0, 2)]);
    store.shutdown().unwrap();

    let (again, rx) = open(dir.path(), Fsync::Always, 1);
    let r = &again.recovered;
    let a = channel(r, "a").unwrap();
    assert_eq!((a.first_seq, a.last_seq), (6, 10));
    assert_eq!(
        stored(r, "a"),
        (6..=10).map(|s| (s, format!("a{s}"))).collect::<Vec<_>>()
    );
    let b = channel(r, "b").unwrap();
    assert_eq!((b.first_seq, b.last_seq, b.messages.len()), (99, 3, 0));
    assert!(channel(r, "never-stored").is_none());
    assert_eq!(r.floor, 10);

    // The emptied channel starts again; the floor moves with it.
    let Opened {
        store, mut intakes, ..
    } = again;
    intakes[0].submit(vec![msg("b", 99, "b99")]).unwrap();
    until_durable(&rx, &[(0, 1)]);
    store.shutdown().unwrap();
    let newest_two = |c: &ChannelName| if c.as_str() == "a" { 2 } else { 10 };
    let (tx, _rx) = mpsc::channel();
    let last = Store::open(
        dir.path(),
        Options::new(Fsync::Always, 1),
        Box::new(ToChannel(tx)),
        &newest_two,
    )
    .unwrap();
    let r = &last.recovered;
    assert_eq!(stored(r, "a"), [(9, "a9".into()), (10, "a10".into())]);
    let b = channel(r, "b").unwrap();
    assert_eq!((b.first_seq, b.last_seq), (99, 99));
    assert_eq!(stored(r, "b"), [(99, "b99".to_string())]);
    assert_eq!(r.floor, 99);
    last.store.shutdown().unwrap();
}

#[test]
fn queue_limits_refuse_with_a_clear_error() {
    let dir = TempDir::new("limits");
    let options = Options {
        queue_records: 5,
        queue_bytes: 1_000,
        ..Options::new(Fsync::Always, 1)
    };
    let (opened, rx) = open_with(dir.path(), options).unwrap();
    let Opened {
        store, mut intakes, ..
    } = opened;
    let intake = &mut intakes[0];
    assert!(store.pause_writer());
    let three = |from: u64| {
        (from..from + 3)
            .map(|s| msg("a", s, "x"))
            .collect::<Vec<_>>()
    };
    assert_eq!(intake.try_submit(three(1)), Ok(Some(1)));
    assert_eq!(intake.try_submit(three(4)), Ok(Some(2)));
    let busy = intake.try_submit(three(7)).unwrap_err();
    assert!(matches!(busy, Refused::Busy { records: 6, .. }), "{busy:?}");
    assert!(busy
        .to_string()
        .starts_with("store: too many publishes waiting for the disk (6 records, "));
    assert!(busy.to_string().ends_with("bytes); retry later"));
    assert_eq!(intake.check(), Err(busy.clone()));
    // The refused submission used no ticket; submit ignores the limits
    // (its records' ids were assigned after a check).
    assert_eq!(intake.submit(three(7)), Ok(Some(3)));
    store.resume_writer();
    until_durable(&rx, &[(0, 3)]);
    assert_eq!(intake.check(), Ok(()));

    // Bytes: one big payload fills the queue's 1,000.
    assert!(store.pause_writer());
    let big = Record::Message {
        channel: ch("a"),
        seq: 10,
        kind: DataKind::Binary,
        published_ms: 0,
        payload: Bytes::from(vec![0u8; 1_000]),
    };
    assert_eq!(intake.try_submit(vec![big]), Ok(Some(4)));
    assert!(matches!(
        intake.try_submit(three(11)),
        Err(Refused::Busy { records: 1, bytes }) if bytes >= 1_000
    ));
    store.resume_writer();
    until_durable(&rx, &[(0, 4)]);
    assert_eq!(intake.try_submit(three(11)), Ok(Some(5)));
    until_durable(&rx, &[(0, 5)]);
    store.shutdown().unwrap();
}

/// One commit holding the same key twice keeps the later item: a burst
/// trimmed in its own turn (the message's insert, then the trim's
/// tombstone of the same key), and two moves of one cursor. fjall gives a
/// batch's items one seqno, so this rests on its memtable keeping the
/// later of two equal keys; were it the other way, the trimmed message
/// would outlive its trim, below the channel's `first_seq`, and a later
/// open would refuse the store as corrupt.
#[test]
fn one_commit_with_a_key_twice_keeps_the_later_item() {
    let dir = TempDir::new("same-key");
    let (opened, rx) = open(dir.path(), Fsync::Always, 1);
    let Opened {
        store, mut intakes, ..
    } = opened;
    let who = crate::hub::Cursor {
        sub: "ann".into(),
        device: "".into(),
    };
    let cursor = |seq| Record::Cursor {
        channel: ch("a"),
        who: who.clone(),
        seq,
        epoch: Epoch::from_bits(7),
        updated_ms: 0,
    };
    let mut records: Vec<Record> = (1..=3).map(|s| msg("a", s, &format!("a{s}"))).collect();
    records.push(cursor(1));
    records.push(Record::Trim {
        channel: ch("a"),
        below_seq: 3,
    });
    records.push(cursor(2));
    intakes[0].submit(records).unwrap();
    until_durable(&rx, &[(0, 1)]);
    store.shutdown().unwrap();

    let (again, _rx) = open(dir.path(), Fsync::Always, 1);
    let r = &again.recovered;
    let a = channel(r, "a").unwrap();
    assert_eq!((a.first_seq, a.last_seq), (3, 3));
    assert_eq!(
        stored(r, "a"),
        [(3, "a3".to_string())],
        "trimmed in the same commit"
    );
    assert_eq!(r.cursors.len(), 1);
    assert_eq!((r.cursors[0].seq, &r.cursors[0].who), (2, &who));
    again.store.shutdown().unwrap();
}
