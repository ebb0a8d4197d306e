//! storebench: fjall vs redb for ringcast's persistent history workload.
//!
//! The workload: messages keyed by (channel, u64 seq) with 200–1000 byte
//! payloads, appended by ONE writer thread that group-commits (N publishes,
//! one durable commit). Every run is bounded by `--secs` or a byte count.
//!
//! Subcommands (all take `--engine fjall|redb --dir PATH`):
//!   commit  --batch N --sync always|data|never --secs S [--quick-repair]
//!           fixed batch size, one commit per batch; publishes/s, commit p50/p99
//!   group   --producers P --window W --max-batch M --sync always|data|never --secs S
//!           producer threads (like shards) queue publishes to the writer, which takes
//!           whatever is queued (≤ M) and commits once: publishes/s and
//!           enqueue→durable latency p50/p99
//!   fill    --bytes B [--crash] [--quick-repair]
//!           write about B payload bytes (batches of 1024, the last commit durable);
//!           with --crash the process aborts right after, without closing the store
//!   reopen  [--cold] [--n 100]
//!           time to open the store, then to read the last n messages of every channel
//!           (what a node's start would do); --cold drops the data dir's pages from the
//!           page cache first (fdatasync + posix_fadvise DONTNEED, this dir only)
//!   lastn   --n 100 --reads R
//!           latency of "last n messages of a random channel"
//!   trim    --keep K
//!           delete all but the newest K messages of every channel (range delete),
//!           durable commit; then compaction (fjall: major_compact; redb: none, freed
//!           pages are reused) and disk usage before/after
//!   steady  --keep K --secs S --sync never|always --batch N
//!           write continuously while trimming every channel to its newest K messages
//!           once a second; prints disk usage every second (is storage bounded?)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use redb::ReadableDatabase;
use rand::{Rng, SeedableRng};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + std::marker::Sync>>;

const CHANNELS: u32 = 1000;

// ---------------------------------------------------------------- keys

fn chan_prefix(ch: u32) -> Vec<u8> {
    let mut k = format!("room:{ch:06}").into_bytes();
    k.push(0);
    k
}

fn key(ch: u32, seq: u64) -> Vec<u8> {
    let mut k = chan_prefix(ch);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Value: published_at (unix ms, 8 bytes) + kind (1 byte) + payload.
fn value(pool: &[u8], rng: &mut SmallRng) -> Vec<u8> {
    let len = rng.gen_range(200..=1000);
    let off = rng.gen_range(0..pool.len() - len);
    let mut v = Vec::with_capacity(9 + len);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    v.extend_from_slice(&ms.to_be_bytes());
    v.push(0);
    v.extend_from_slice(&pool[off..off + len]);
    v
}

fn text_pool() -> Vec<u8> {
    // Chat-like text: words from a small vocabulary (compressible, like JSON chat).
    let words = [
        "the", "message", "hello", "ok", "see", "you", "tomorrow", "lunch", "meeting", "at",
        "noon", "{\"user\":", "\"text\":", "thanks", "great", "idea", "let's", "ship", "it",
        "today", "ringcast", "channel", "ack", "unread", "photo", "link", "https://x.example/",
    ];
    let mut rng = SmallRng::seed_from_u64(7);
    let mut out = Vec::with_capacity(1 << 20);
    while out.len() < (1 << 20) {
        out.extend_from_slice(words[rng.gen_range(0..words.len())].as_bytes());
        out.push(b' ');
        if rng.gen_ratio(1, 8) {
            // some digits/noise so it is not trivially compressible
            out.extend_from_slice(format!("{} ", rng.gen::<u32>()).as_bytes());
        }
    }
    out
}

// ---------------------------------------------------------------- stores

#[derive(Clone, Copy, Debug, PartialEq)]
enum Sync {
    Always, // fsync (fjall SyncAll; redb Immediate)
    Data,   // fdatasync (fjall SyncData; redb: same as Always)
    Never,  // fjall: write() to the OS (Buffer), redb: Durability::None
}

trait Store: Send {
    fn append(&mut self, items: &[(Vec<u8>, Vec<u8>)], sync: Sync) -> Res<()>;
    /// Make everything written so far durable.
    fn sync_now(&mut self) -> Res<()>;
    /// (messages, bytes) of the last n messages of channel `ch`.
    fn last_n(&self, ch: u32, n: usize) -> Res<(usize, usize)>;
    /// The newest seq of channel `ch`, if any.
    fn last_seq(&self, ch: u32) -> Res<Option<u64>>;
    /// Deletes messages of `ch` with seq < `below` (durable commit). Returns count.
    fn trim_many(&mut self, ranges: &[(u32, u64, u64)]) -> Res<u64>;
    fn compact(&mut self) -> Res<()>;
    /// What a graceful shutdown would do before closing (fjall: flush the memtable
    /// to a table so the next open replays no journal).
    fn flush(&mut self) -> Res<()> {
        Ok(())
    }
    fn close(self: Box<Self>) -> Res<()>;
}

struct Fjall {
    db: fjall::Database,
    msgs: fjall::Keyspace,
}

fn open_fjall(dir: &Path) -> Res<Fjall> {
    // Optional tuning from the environment (defaults = fjall's: 512 MiB journals, 64 MiB memtable).
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let mut b = fjall::Database::builder(dir)
        .worker_threads(1) // one background thread for flush + compaction (2-core host)
        .cache_size(64 * 1024 * 1024);
    if let Some(mb) = env("FJALL_JOURNAL_MB") {
        b = b.max_journaling_size(mb << 20);
    }
    let db = b.open()?;
    let memtable = env("FJALL_MEMTABLE_MB");
    let msgs = db.keyspace("msgs", || {
        let o = fjall::KeyspaceCreateOptions::default();
        match memtable {
            Some(mb) => o.max_memtable_size(mb << 20),
            None => o,
        }
    })?;
    Ok(Fjall { db, msgs })
}

impl Store for Fjall {
    fn append(&mut self, items: &[(Vec<u8>, Vec<u8>)], sync: Sync) -> Res<()> {
        let mode = match sync {
            Sync::Always => fjall::PersistMode::SyncAll,
            Sync::Data => fjall::PersistMode::SyncData,
            Sync::Never => fjall::PersistMode::Buffer,
        };
        let mut b = self.db.batch().durability(Some(mode));
        for (k, v) in items {
            b.insert(&self.msgs, k.as_slice(), v.as_slice());
        }
        b.commit()?;
        Ok(())
    }
    fn sync_now(&mut self) -> Res<()> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
    fn last_n(&self, ch: u32, n: usize) -> Res<(usize, usize)> {
        let (mut c, mut b) = (0, 0);
        for g in self.msgs.prefix(chan_prefix(ch)).rev().take(n) {
            let (_k, v) = g.into_inner()?;
            c += 1;
            b += v.len();
        }
        Ok((c, b))
    }
    fn last_seq(&self, ch: u32) -> Res<Option<u64>> {
        match self.msgs.prefix(chan_prefix(ch)).next_back() {
            None => Ok(None),
            Some(g) => {
                let (k, _) = g.into_inner()?;
                Ok(Some(u64::from_be_bytes(k[k.len() - 8..].try_into()?)))
            }
        }
    }
    fn trim_many(&mut self, ranges: &[(u32, u64, u64)]) -> Res<u64> {
        // Point tombstones for known seqs (the writer knows each channel's first seq).
        let mut n = 0u64;
        let mut b = self.db.batch().durability(Some(fjall::PersistMode::SyncAll));
        for &(ch, from, below) in ranges {
            for s in from..below {
                b.remove(&self.msgs, key(ch, s));
                n += 1;
            }
        }
        b.commit()?;
        Ok(n)
    }
    fn compact(&mut self) -> Res<()> {
        self.msgs.rotate_memtable_and_wait()?;
        self.msgs.major_compact()?;
        Ok(())
    }
    fn flush(&mut self) -> Res<()> {
        self.msgs.rotate_memtable_and_wait()?;
        Ok(())
    }
    fn close(self: Box<Self>) -> Res<()> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        drop(self);
        Ok(())
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("msgs");

struct Redb {
    db: redb::Database,
    quick_repair: bool,
}

fn open_redb(dir: &Path, quick_repair: bool) -> Res<Redb> {
    std::fs::create_dir_all(dir)?;
    let db = redb::Database::builder()
        .set_cache_size(64 * 1024 * 1024)
        .create(dir.join("ringcast.redb"))?;
    let tx = db.begin_write()?;
    tx.open_table(TABLE)?;
    tx.commit()?;
    Ok(Redb { db, quick_repair })
}

impl Redb {
    fn write(&self, sync: Sync) -> Res<redb::WriteTransaction> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(match sync {
            Sync::Never => redb::Durability::None,
            _ => redb::Durability::Immediate,
        })?;
        if self.quick_repair && sync != Sync::Never {
            tx.set_quick_repair(true);
        }
        Ok(tx)
    }
}

impl Store for Redb {
    fn append(&mut self, items: &[(Vec<u8>, Vec<u8>)], sync: Sync) -> Res<()> {
        let tx = self.write(sync)?;
        {
            let mut t = tx.open_table(TABLE)?;
            for (k, v) in items {
                t.insert(k.as_slice(), v.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
    fn sync_now(&mut self) -> Res<()> {
        let tx = self.write(Sync::Always)?;
        tx.open_table(TABLE)?;
        tx.commit()?;
        Ok(())
    }
    fn last_n(&self, ch: u32, n: usize) -> Res<(usize, usize)> {
        let rtx = self.db.begin_read()?;
        let t = rtx.open_table(TABLE)?;
        let lo = key(ch, 0);
        let hi = key(ch, u64::MAX);
        let (mut c, mut b) = (0, 0);
        for e in t.range(lo.as_slice()..=hi.as_slice())?.rev().take(n) {
            let (_k, v) = e?;
            c += 1;
            b += v.value().len();
        }
        Ok((c, b))
    }
    fn last_seq(&self, ch: u32) -> Res<Option<u64>> {
        let rtx = self.db.begin_read()?;
        let t = rtx.open_table(TABLE)?;
        let lo = key(ch, 0);
        let hi = key(ch, u64::MAX);
        let last = t.range(lo.as_slice()..=hi.as_slice())?.next_back();
        match last {
            None => Ok(None),
            Some(e) => {
                let (k, _) = e?;
                let k = k.value();
                Ok(Some(u64::from_be_bytes(k[k.len() - 8..].try_into()?)))
            }
        }
    }
    fn trim_many(&mut self, ranges: &[(u32, u64, u64)]) -> Res<u64> {
        let tx = self.write(Sync::Always)?;
        let mut n = 0u64;
        {
            let mut t = tx.open_table(TABLE)?;
            for &(ch, from, below) in ranges {
                let lo = key(ch, from);
                let hi = key(ch, below);
                t.retain_in(lo.as_slice()..hi.as_slice(), |_, _| {
                    n += 1;
                    false
                })?;
            }
        }
        tx.commit()?;
        Ok(n)
    }
    fn compact(&mut self) -> Res<()> {
        // redb can compact only with exclusive access (&mut Database): no writes meanwhile.
        self.db.compact()?;
        Ok(())
    }
    fn close(self: Box<Self>) -> Res<()> {
        drop(self);
        Ok(())
    }
}

// ---------------------------------------------------------------- helpers

struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> (String, Args) {
        let mut it = std::env::args().skip(1);
        let cmd = it.next().unwrap_or_default();
        let mut m = HashMap::new();
        let rest: Vec<String> = it.collect();
        let mut i = 0;
        while i < rest.len() {
            let k = rest[i].trim_start_matches("--").to_string();
            if i + 1 < rest.len() && !rest[i + 1].starts_with("--") {
                m.insert(k, rest[i + 1].clone());
                i += 2;
            } else {
                m.insert(k, "true".into());
                i += 1;
            }
        }
        (cmd, Args(m))
    }
    fn s(&self, k: &str, d: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    fn n(&self, k: &str, d: u64) -> u64 {
        self.0.get(k).map(|v| v.parse().unwrap()).unwrap_or(d)
    }
    fn flag(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
}

fn open(engine: &str, dir: &Path, quick_repair: bool) -> Res<Box<dyn Store>> {
    Ok(match engine {
        "fjall" => Box::new(open_fjall(dir)?),
        "redb" => Box::new(open_redb(dir, quick_repair)?),
        e => return Err(format!("unknown engine {e}").into()),
    })
}

fn parse_sync(s: &str) -> Sync {
    match s {
        "always" => Sync::Always,
        "data" => Sync::Data,
        "never" => Sync::Never,
        _ => panic!("--sync always|data|never"),
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn du(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let mut t = 0;
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let md = match e.metadata() {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                if md.is_dir() {
                    t += walk(&e.path());
                } else {
                    use std::os::unix::fs::MetadataExt;
                    t += md.blocks() * 512;
                }
            }
        }
        t
    }
    walk(dir)
}

/// CPU seconds (user + system) this process has used, all threads.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds of the calling thread only.
fn thread_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Drops this directory's pages from the page cache (fdatasync then
/// POSIX_FADV_DONTNEED on each file). Touches no other file on the host.
fn drop_cache(dir: &Path) {
    fn walk(p: &Path) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path);
                } else if let Ok(f) = std::fs::OpenOptions::new().read(true).open(&path) {
                    use std::os::fd::AsRawFd;
                    let _ = f.sync_data();
                    // SAFETY: a valid fd; advisory call only.
                    unsafe {
                        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
                    }
                }
            }
        }
    }
    walk(dir);
}

/// The next batch: `n` messages over random channels, seqs continuing `seqs`.
fn make_batch(
    n: usize,
    seqs: &mut [u64],
    pool: &[u8],
    rng: &mut SmallRng,
) -> (Vec<(Vec<u8>, Vec<u8>)>, usize) {
    let mut items = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let ch = rng.gen_range(0..CHANNELS);
        seqs[ch as usize] += 1;
        let v = value(pool, rng);
        bytes += v.len() - 9;
        items.push((key(ch, seqs[ch as usize]), v));
    }
    (items, bytes)
}

/// Each channel's last seq already in the store (so runs can continue a store).
fn load_seqs(s: &dyn Store) -> Res<Vec<u64>> {
    (0..CHANNELS)
        .map(|c| Ok(s.last_seq(c)?.unwrap_or(0)))
        .collect()
}

// ---------------------------------------------------------------- commands

fn cmd_commit(a: &Args, engine: &str, dir: &Path) -> Res<()> {
    let batch = a.n("batch", 16) as usize;
    let sync = parse_sync(&a.s("sync", "always"));
    let secs = a.n("secs", 10);
    let mut s = open(engine, dir, a.flag("quick-repair"))?;
    let pool = text_pool();
    let mut rng = SmallRng::seed_from_u64(1);
    let mut seqs = load_seqs(&*s)?;
    let mut lat = Vec::new();
    let (mut msgs, mut bytes) = (0u64, 0u64);
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let (items, b) = make_batch(batch, &mut seqs, &pool, &mut rng);
        let t = Instant::now();
        s.append(&items, sync)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        msgs += batch as u64;
        bytes += b as u64;
    }
    let el = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let t = Instant::now();
    s.sync_now()?;
    let final_sync = t.elapsed();
    let commits = lat.len();
    let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
    println!(
        "RESULT cmd=commit engine={engine} sync={sync:?} batch={batch} secs={el:.1} msgs={msgs} publishes_per_s={:.0} MB_per_s={:.1} commits={commits} commits_per_s={:.0} commit_p50_us={p50:.0} commit_p99_us={p99:.0} commit_max_us={max:.0} final_sync_ms={:.1} cpu_ms_per_1k={:.1} disk={}",
        msgs as f64 / el,
        bytes as f64 / el / 1e6,
        commits as f64 / el,
        final_sync.as_secs_f64() * 1e3,
        cpu * 1e6 / msgs as f64,
        mib(du(dir)),
    );
    s.close()?;
    Ok(())
}

struct Item {
    k: Vec<u8>,
    v: Vec<u8>,
    t0: Instant,
    producer: usize,
}

fn cmd_group(a: &Args, engine: &str, dir: &Path) -> Res<()> {
    let producers = a.n("producers", 2) as usize;
    let window = a.n("window", 512) as usize;
    let max_batch = a.n("max-batch", 1024) as usize;
    let sync = parse_sync(&a.s("sync", "always"));
    let secs = a.n("secs", 10);
    // Offered load per producer (publishes/s); 0 = as fast as the window allows.
    let rate = a.n("rate", 0);
    let mut s = open(engine, dir, a.flag("quick-repair"))?;
    let seqs0 = load_seqs(&*s)?;
    let pool = Arc::new(text_pool());
    let (tx, rx) = crossbeam_channel::bounded::<Item>(65_536);
    let stop = Arc::new(AtomicBool::new(false));
    let mut acks = Vec::new();
    let mut handles = Vec::new();
    for p in 0..producers {
        // Each producer owns the channels ≡ p (mod producers), like owner shards.
        let (atx, arx) = crossbeam_channel::unbounded::<u32>();
        acks.push(atx);
        let tx = tx.clone();
        let stop = stop.clone();
        let pool = pool.clone();
        let mut seqs = seqs0.clone();
        handles.push(std::thread::spawn(move || {
            let mut rng = SmallRng::seed_from_u64(p as u64 + 10);
            let mut inflight = 0usize;
            let t_start = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                while let Ok(n) = arx.try_recv() {
                    inflight -= n as usize;
                }
                if rate > 0 {
                    // Open loop: send what is due by now, else sleep ~0.5 ms.
                    let due = (t_start.elapsed().as_secs_f64() * rate as f64) as u64;
                    if sent >= due {
                        std::thread::sleep(Duration::from_micros(500));
                        continue;
                    }
                }
                if inflight >= window {
                    match arx.recv_timeout(Duration::from_millis(50)) {
                        Ok(n) => inflight -= n as usize,
                        Err(_) => continue,
                    }
                    continue;
                }
                let ch = loop {
                    let c = rng.gen_range(0..CHANNELS);
                    if c as usize % producers == p {
                        break c;
                    }
                };
                seqs[ch as usize] += 1;
                let it = Item {
                    k: key(ch, seqs[ch as usize]),
                    v: value(&pool, &mut rng),
                    t0: Instant::now(),
                    producer: p,
                };
                if tx.send(it).is_err() {
                    break;
                }
                sent += 1;
                inflight += 1;
            }
        }));
    }
    drop(tx);
    let mut lat = Vec::new();
    let mut commit_lat = Vec::new();
    let mut batch_sizes = Vec::new();
    let (mut msgs, mut bytes) = (0u64, 0u64);
    let cpu0 = cpu_secs();
    let wcpu0 = thread_cpu_secs();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut buf: Vec<Item> = Vec::with_capacity(max_batch);
    let mut kv: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(max_batch);
    while Instant::now() < deadline {
        let first = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(i) => i,
            Err(_) => continue,
        };
        buf.push(first);
        while buf.len() < max_batch {
            match rx.try_recv() {
                Ok(i) => buf.push(i),
                Err(_) => break,
            }
        }
        kv.clear();
        kv.extend(buf.iter().map(|i| (i.k.clone(), i.v.clone())));
        let t = Instant::now();
        s.append(&kv, sync)?;
        let now = Instant::now();
        commit_lat.push((now - t).as_secs_f64() * 1e6);
        batch_sizes.push(buf.len() as f64);
        let mut per = vec![0u32; producers];
        for i in buf.drain(..) {
            lat.push((now - i.t0).as_secs_f64() * 1e6);
            per[i.producer] += 1;
            msgs += 1;
            bytes += (i.v.len() - 9) as u64;
        }
        for (p, n) in per.into_iter().enumerate() {
            if n > 0 {
                let _ = acks[p].send(n);
            }
        }
    }
    let el = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let wcpu = thread_cpu_secs() - wcpu0;
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    for h in handles {
        let _ = h.join();
    }
    let mean_batch = batch_sizes.iter().sum::<f64>() / batch_sizes.len().max(1) as f64;
    println!(
        "RESULT cmd=group engine={engine} sync={sync:?} producers={producers} rate_each={rate} window={window} max_batch={max_batch} secs={el:.1} msgs={msgs} publishes_per_s={:.0} MB_per_s={:.1} commits={} mean_batch={mean_batch:.0} p50_batch={:.0} latency_p50_us={:.0} latency_p99_us={:.0} commit_p50_us={:.0} commit_p99_us={:.0} commit_max_us={:.0} commits_over_10ms={} cpu_ms_per_1k={:.1} writer_thread_cpu_ms_per_1k={:.1} disk={}",
        msgs as f64 / el,
        bytes as f64 / el / 1e6,
        batch_sizes.len(),
        pct(&mut batch_sizes, 0.5),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut commit_lat, 0.5),
        pct(&mut commit_lat, 0.99),
        pct(&mut commit_lat, 1.0),
        commit_lat.iter().filter(|&&l| l > 10_000.0).count(),
        cpu * 1e6 / msgs.max(1) as f64,
        wcpu * 1e6 / msgs.max(1) as f64,
        mib(du(dir)),
    );
    s.close()?;
    Ok(())
}

fn cmd_fill(a: &Args, engine: &str, dir: &Path) -> Res<()> {
    let target = a.n("bytes", 200 << 20);
    let secs = a.n("secs", 55);
    let crash = a.flag("crash");
    let mut s = open(engine, dir, a.flag("quick-repair"))?;
    let pool = text_pool();
    let mut rng = SmallRng::seed_from_u64(3);
    let mut seqs = load_seqs(&*s)?;
    let start = Instant::now();
    let (mut msgs, mut bytes) = (0u64, 0u64);
    // Group commits of 1024 without fsync (fjall: written to the OS; redb: non-durable,
    // with a durable commit every 16th batch so that pages get freed), the last durable.
    let mut i = 0u64;
    while bytes < target && start.elapsed() < Duration::from_secs(secs) {
        let (items, b) = make_batch(1024, &mut seqs, &pool, &mut rng);
        i += 1;
        let sync = if engine == "redb" && i % 16 == 0 { Sync::Always } else { Sync::Never };
        s.append(&items, sync)?;
        msgs += 1024;
        bytes += b as u64;
    }
    s.sync_now()?;
    let el = start.elapsed().as_secs_f64();
    println!(
        "RESULT cmd=fill engine={engine} msgs={msgs} payload={} secs={el:.1} publishes_per_s={:.0} disk={} crash={crash}",
        mib(bytes),
        msgs as f64 / el,
        mib(du(dir)),
    );
    if crash {
        // Like kill -9: no destructor, no clean close.
        std::process::abort();
    }
    let t = Instant::now();
    if a.flag("flush") {
        s.flush()?;
    }
    s.close()?;
    println!("RESULT cmd=fill-close engine={engine} flush={} close_ms={:.0}", a.flag("flush"), t.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

fn cmd_reopen(a: &Args, engine: &str, dir: &Path) -> Res<()> {
    let n = a.n("n", 100) as usize;
    let cold = a.flag("cold");
    if cold {
        drop_cache(dir);
    }
    let t = Instant::now();
    let s = open(engine, dir, false)?;
    let open_t = t.elapsed();
    let t = Instant::now();
    let (mut c, mut b) = (0, 0);
    for ch in 0..CHANNELS {
        let (cc, bb) = s.last_n(ch, n)?;
        c += cc;
        b += bb;
    }
    let read_t = t.elapsed();
    println!(
        "RESULT cmd=reopen engine={engine} cold={cold} open_ms={:.1} lastn_all_channels_ms={:.1} channels={CHANNELS} msgs_read={c} bytes_read={} disk={}",
        open_t.as_secs_f64() * 1e3,
        read_t.as_secs_f64() * 1e3,
        mib(b as u64),
        mib(du(dir)),
    );
    s.close()?;
    Ok(())
}

fn cmd_lastn(a: &Args, engine: &str, dir: &Path) -> Res<()> {
    let n = a.n("n", 100) as usize;
    let reads = a.n("reads", 2000);
    let cold = a.flag("cold");
    if cold {
        drop_cache(dir);
    }
    let s = open(engine, dir, false)?;
    let mut rng = SmallRng::seed_from_u64(5);
    let mut lat = Vec::new();
    let mut got = 0;
    let start = Instant::now();
    for _ in 0..reads {
        let ch = rng.gen_range(0..CHANNELS);
        let t = Instant::now();
        let (c, _) = s.last_n(ch, n)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        got += c;
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "RESULT cmd=lastn engine={engine} cold={cold} n={n} reads={reads} mean_msgs={:.0} read_p50_us={:.0} read_p99_us={:.0} read_max_us={:.0} reads_per_s={:.0}",
        got as f64 / reads as f64,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        reads as f64 / el,
    );
    s.close()?;
    Ok(())
}

fn first_seq(s: &dyn Store, ch: u32, last: u64) -> Res<u64> {
    // Count the channel's messages by reading back (only for the benchmark's set-up).
    let (c, _) = s.last_n(ch, usize::MAX)?;
    Ok(last + 1 - c as u64)
}

fn cmd_trim(a: &Args, engine: &str, dir: &Path) -> Res<()> {
    let keep = a.n("keep", 100);
    let mut s = open(engine, dir, false)?;
    let before = du(dir);
    let mut ranges = Vec::new();
    for ch in 0..CHANNELS {
        if let Some(last) = s.last_seq(ch)? {
            let first = first_seq(&*s, ch, last)?;
            let below = last.saturating_sub(keep) + 1;
            if below > first {
                ranges.push((ch, first, below));
            }
        }
    }
    let t = Instant::now();
    let n = s.trim_many(&ranges)?;
    let trim_t = t.elapsed();
    let after_trim = du(dir);
    let t = Instant::now();
    let compacted = if a.flag("no-compact") {
        None
    } else {
        s.compact()?;
        Some(t.elapsed())
    };
    let after = du(dir);
    let (c, _) = s.last_n(0, usize::MAX)?;
    println!(
        "RESULT cmd=trim engine={engine} keep={keep} removed={n} trim_commit_ms={:.0} per_msg_us={:.2} disk_before={} disk_after_trim={} compact_ms={} disk_after_compact={} ch0_count={c}",
        trim_t.as_secs_f64() * 1e3,
        trim_t.as_secs_f64() * 1e6 / n.max(1) as f64,
        mib(before),
        mib(after_trim),
        compacted.map_or("skipped".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3)),
        mib(after),
    );
    s.close()?;
    Ok(())
}

fn cmd_steady(a: &Args, engine: &str, dir: &Path) -> Res<()> {
    let keep = a.n("keep", 1000);
    let secs = a.n("secs", 40);
    let batch = a.n("batch", 256) as usize;
    let sync = parse_sync(&a.s("sync", "never"));
    let mut s = open(engine, dir, false)?;
    let pool = text_pool();
    let mut rng = SmallRng::seed_from_u64(9);
    let mut seqs = load_seqs(&*s)?;
    let mut firsts: Vec<u64> = (0..CHANNELS)
        .map(|ch| {
            let last = seqs[ch as usize];
            if last == 0 {
                Ok(1)
            } else {
                first_seq(&*s, ch, last)
            }
        })
        .collect::<Res<_>>()?;
    let start = Instant::now();
    let mut next_trim = start + Duration::from_secs(1);
    let (mut msgs, mut trims_ms) = (0u64, Vec::new());
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let (items, _) = make_batch(batch, &mut seqs, &pool, &mut rng);
        s.append(&items, sync)?;
        msgs += batch as u64;
        if Instant::now() >= next_trim {
            next_trim += Duration::from_secs(1);
            let mut ranges = Vec::new();
            for ch in 0..CHANNELS as usize {
                let below = seqs[ch].saturating_sub(keep) + 1;
                if below > firsts[ch] {
                    ranges.push((ch as u32, firsts[ch], below));
                    firsts[ch] = below;
                }
            }
            let t = Instant::now();
            s.trim_many(&ranges)?;
            trims_ms.push(t.elapsed().as_secs_f64() * 1e3);
            samples.push(format!(
                "{}s:{:.0}MiB",
                start.elapsed().as_secs(),
                du(dir) as f64 / 1048576.0
            ));
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "RESULT cmd=steady engine={engine} sync={sync:?} keep_per_channel={keep} batch={batch} secs={el:.0} msgs={msgs} publishes_per_s={:.0} trim_p50_ms={:.0} trim_max_ms={:.0} disk_over_time=[{}]",
        msgs as f64 / el,
        pct(&mut trims_ms.clone(), 0.5),
        pct(&mut trims_ms, 1.0),
        samples.join(" "),
    );
    s.close()?;
    Ok(())
}

/// The device's floor: append ~600 bytes to a plain file and fdatasync, for `--secs`.
fn cmd_fsyncprobe(a: &Args, dir: &Path) -> Res<()> {
    use std::io::Write;
    let secs = a.n("secs", 5);
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsyncprobe.dat");
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&path)?;
    let buf = vec![b'x'; 600];
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        f.write_all(&buf)?;
        let t = Instant::now();
        f.sync_data()?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let n = lat.len();
    println!(
        "RESULT cmd=fsyncprobe appends_fdatasync={n} per_s={:.0} p50_us={:.0} p99_us={:.0} max_us={:.0}",
        n as f64 / start.elapsed().as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
    );
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(())
}

fn main() -> Res<()> {
    let (cmd, a) = Args::parse();
    let engine = a.s("engine", "fjall");
    let dir = PathBuf::from(a.s("dir", "data/bench"));
    if a.flag("fresh") {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match cmd.as_str() {
        "commit" => cmd_commit(&a, &engine, &dir),
        "group" => cmd_group(&a, &engine, &dir),
        "fill" => cmd_fill(&a, &engine, &dir),
        "reopen" => cmd_reopen(&a, &engine, &dir),
        "lastn" => cmd_lastn(&a, &engine, &dir),
        "trim" => cmd_trim(&a, &engine, &dir),
        "steady" => cmd_steady(&a, &engine, &dir),
        "fsyncprobe" => cmd_fsyncprobe(&a, &dir),
        _ => {
            eprintln!("usage: storebench commit|group|fill|reopen|lastn|trim|steady --engine fjall|redb --dir D [--fresh] ...");
            std::process::exit(2)
        }
    }
}
