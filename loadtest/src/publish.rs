//! The publisher: `POST`s at a fixed schedule over pipelined keep-alive
//! connections.
//!
//! Message `i` is due at `start + i / rate`. Its payload carries that
//! *intended* time; when the publisher falls behind (the server or this
//! host is slow), it sends the overdue messages at once, and the lateness
//! shows up in every subscriber's latency instead of silently stretching
//! the schedule (coordinated omission). The publisher's own lag is
//! reported too, so a slow publisher is not mistaken for a slow server.
//!
//! Message `i` goes to channel `i % channels`. Responses are read on a
//! second thread per connection; any status but `200` counts as an error.
//!
//! An `https://` publisher speaks TLS through rustls's buffered connection
//! (one per publisher connection, handshaken before the first request),
//! shared by the connection's writer and reader threads: only the writer
//! puts bytes on the socket, so records leave in the order they were
//! sealed, and the reader only feeds in what arrives.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::client::channel_name;
use crate::marker::{now_nanos, Marker};
use crate::payload::{Payload, CHAT_MAX};
use crate::stats::{latency_ns, LatencyHist};
use crate::url::UrlTemplate;

/// Requests a connection may have outstanding before its writer waits.
const PIPELINE: usize = 4096;
/// Most bytes written at once when catching up.
const MAX_WRITE: usize = 256 * 1024;

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// `POST` URL template.
    pub url: UrlTemplate,
    /// Channels.
    pub channels: u32,
    /// Channel name prefix.
    pub channel_prefix: String,
    /// Messages.
    pub msgs: u64,
    /// Messages per second, over all channels.
    pub rate: f64,
    /// Payload size in bytes (at least the marker), for [`Payload::Pad`].
    pub size: usize,
    /// What each message carries.
    pub payload: Payload,
    /// Seed of [`Payload::Chat`] messages.
    pub payload_seed: u64,
    /// Run id for the markers.
    pub run: u32,
    /// Publisher connections.
    pub conns: usize,
    /// Intended time of message 0 (nanoseconds, marker clock).
    pub start_ns: u64,
    /// TLS (`https://`); `None`: plaintext.
    pub tls: Option<PublishTls>,
}

/// What an `https://` publisher connects with.
#[derive(Debug, Clone)]
pub struct PublishTls {
    /// Client configuration (trust, versions).
    pub config: Arc<ClientConfig>,
    /// Server name (SNI; what the certificate must name).
    pub name: ServerName<'static>,
}

/// What the publisher did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PublishResult {
    /// Requests written.
    pub sent: u64,
    /// `200` answers.
    pub ok: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Most the publisher fell behind its schedule, in milliseconds.
    pub max_lag_ms: f64,
    /// From message 0's intended time to the last answer, seconds.
    pub duration_s: f64,
    /// Publish acknowledgement latency (intended time → `200`).
    #[serde(skip)]
    pub ack: LatencyHist,
}

/// Progress readable while publishing.
#[derive(Debug, Default)]
pub struct PublishProgress {
    /// Requests written.
    pub sent: AtomicU64,
    /// Answers read.
    pub answered: AtomicU64,
}

/// Publishes, blocking until every answer is in, `stop` is set, or a
/// connection fails.
pub fn publish(
    cfg: &PublishConfig,
    stop: &AtomicBool,
    progress: &PublishProgress,
) -> Result<PublishResult, String> {
    let conns = cfg.conns.max(1);
    let mut result = PublishResult::default();
    let results: Vec<Result<PublishResult, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|j| s.spawn(move || one_connection(cfg, j, conns, stop, progress)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("publisher thread panicked".into()))
            })
            .collect()
    });
    for r in results {
        let r = r?;
        result.sent += r.sent;
        result.ok += r.ok;
        for (k, v) in r.errors {
            *result.errors.entry(k).or_default() += v;
        }
        result.max_lag_ms = result.max_lag_ms.max(r.max_lag_ms);
        result.duration_s = result.duration_s.max(r.duration_s);
        result.ack.merge(&r.ack);
    }
    Ok(result)
}

fn connect(url: &UrlTemplate) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&url.addr.into(), Duration::from_secs(5))
        .map_err(|e| format!("publisher cannot connect to {}: {e}", url.addr))?;
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    Ok(s)
}

fn one_connection(
    cfg: &PublishConfig,
    j: usize,
    conns: usize,
    stop: &AtomicBool,
    progress: &PublishProgress,
) -> Result<PublishResult, String> {
    let stream = connect(&cfg.url)?;
    match &cfg.tls {
        None => {
            let reader = stream.try_clone().map_err(|e| format!("publisher: {e}"))?;
            pipeline(cfg, j, conns, stop, progress, stream, reader)
        }
        Some(t) => {
            let shared = Arc::new(TlsShared::handshake(t, stream)?);
            let writer = TlsWriter(shared.clone());
            let reader = TlsReader {
                shared,
                raw: vec![0; 16 * 1024],
                pos: 0,
                len: 0,
            };
            pipeline(cfg, j, conns, stop, progress, writer, reader)
        }
    }
}

/// One connection's requests (written on this thread) and answers (read
/// on another).
fn pipeline<W: Write, R: Read + Send>(
    cfg: &PublishConfig,
    j: usize,
    conns: usize,
    stop: &AtomicBool,
    progress: &PublishProgress,
    stream: W,
    reader: R,
) -> Result<PublishResult, String> {
    let (tx, rx) = mpsc::sync_channel::<u64>(PIPELINE);
    let failed = Arc::new(AtomicBool::new(false));
    let targets: Vec<String> = (0..cfg.channels)
        .map(|c| cfg.url.target(&channel_name(&cfg.channel_prefix, c), &[]))
        .collect();
    std::thread::scope(|s| {
        let failed_r = failed.clone();
        let read = s.spawn(move || read_answers(reader, rx, &failed_r, progress));
        let write = write_requests(cfg, stream, tx, j, conns, &targets, stop, &failed, progress);
        let mut r = read
            .join()
            .unwrap_or_else(|_| Err("publisher reader panicked".into()))?;
        let (sent, lag) = write?;
        r.sent = sent;
        r.max_lag_ms = lag;
        r.duration_s = (now_nanos().saturating_sub(cfg.start_ns)) as f64 / 1e9;
        Ok(r)
    })
}

#[allow(clippy::too_many_arguments)]
fn write_requests<W: Write>(
    cfg: &PublishConfig,
    mut stream: W,
    tx: mpsc::SyncSender<u64>,
    j: usize,
    conns: usize,
    targets: &[String],
    stop: &AtomicBool,
    failed: &AtomicBool,
    progress: &PublishProgress,
) -> Result<(u64, f64), String> {
    let interval = 1e9 / cfg.rate;
    let mut buf = Vec::with_capacity(MAX_WRITE + 4096);
    let mut body = Vec::with_capacity(cfg.size.max(CHAT_MAX) + 64);
    let mut sent = 0u64;
    let mut max_lag = 0u64;
    let mut i = j as u64;
    while i < cfg.msgs {
        if stop.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed) {
            break;
        }
        let due = cfg.start_ns + (i as f64 * interval) as u64;
        let now = now_nanos();
        if due > now {
            std::thread::sleep(Duration::from_nanos((due - now).min(50_000_000)));
            continue;
        }
        max_lag = max_lag.max(now - due);
        // Everything due now, in one write.
        buf.clear();
        let mut intents = Vec::new();
        while i < cfg.msgs && buf.len() < MAX_WRITE {
            let due = cfg.start_ns + (i as f64 * interval) as u64;
            if due > now {
                break;
            }
            body.clear();
            let marker = Marker {
                run: cfg.run,
                seq: i,
                nanos: due,
            };
            cfg.payload
                .encode(&marker, cfg.size, cfg.payload_seed, &mut body);
            let target = &targets[(i % u64::from(cfg.channels.max(1))) as usize];
            buf.extend_from_slice(
                format!(
                    "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    cfg.url.host,
                    body.len()
                )
                .as_bytes(),
            );
            buf.extend_from_slice(&body);
            intents.push(due);
            i += conns as u64;
        }
        for d in intents.iter() {
            if tx.send(*d).is_err() {
                return Err("publisher: the answer reader stopped".into());
            }
        }
        stream
            .write_all(&buf)
            .map_err(|e| format!("publisher write failed: {e}"))?;
        sent += intents.len() as u64;
        progress
            .sent
            .fetch_add(intents.len() as u64, Ordering::Relaxed);
    }
    drop(tx);
    Ok((sent, max_lag as f64 / 1e6))
}

fn read_answers<R: Read>(
    stream: R,
    rx: mpsc::Receiver<u64>,
    failed: &AtomicBool,
    progress: &PublishProgress,
) -> Result<PublishResult, String> {
    let mut r = PublishResult::default();
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = String::new();
    for intended in rx {
        let status = match read_response(&mut reader, &mut line) {
            Ok(s) => s,
            Err(e) => {
                failed.store(true, Ordering::Relaxed);
                *r.errors.entry(format!("publish_{e}")).or_default() += 1;
                return Ok(r);
            }
        };
        progress.answered.fetch_add(1, Ordering::Relaxed);
        if status == 200 {
            r.ok += 1;
            r.ack.record_ns(latency_ns(intended, now_nanos()));
        } else {
            *r.errors
                .entry(format!("publish_http_{status}"))
                .or_default() += 1;
        }
    }
    Ok(r)
}

/// Reads one response; returns its status.
fn read_response<R: Read>(r: &mut BufReader<R>, line: &mut String) -> Result<u16, String> {
    line.clear();
    if r.read_line(line).map_err(|e| io_kind(&e))? == 0 {
        return Err("connection_closed".into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad_response")?;
    let mut len = 0usize;
    let mut chunked = false;
    loop {
        line.clear();
        if r.read_line(line).map_err(|e| io_kind(&e))? == 0 {
            return Err("connection_closed".into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().map_err(|_| "bad_content_length")?;
            } else if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                chunked = true;
            }
        }
    }
    if chunked {
        return Err("chunked_answer_unsupported".into());
    }
    let mut body = vec![0u8; len.min(1 << 20)];
    r.read_exact(&mut body).map_err(|e| io_kind(&e))?;
    Ok(status)
}

fn io_kind(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timeout".into(),
        k => format!("{k:?}").to_lowercase(),
    }
}

/// An `https://` publisher connection: the TLS session its two threads
/// share, and the socket.
struct TlsShared {
    conn: Mutex<ClientConnection>,
    sock: TcpStream,
}

impl TlsShared {
    /// Connects TLS over `sock` (blocking, within the socket's timeouts).
    fn handshake(t: &PublishTls, mut sock: TcpStream) -> Result<TlsShared, String> {
        let mut conn = ClientConnection::new(t.config.clone(), t.name.clone())
            .map_err(|e| format!("publisher TLS: {e}"))?;
        // Requests are sealed as they are written, however many at once.
        conn.set_buffer_limit(None);
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .map_err(|e| format!("publisher TLS handshake failed: {e}"))?;
        }
        Ok(TlsShared {
            conn: Mutex::new(conn),
            sock,
        })
    }

    fn lock(&self) -> MutexGuard<'_, ClientConnection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer's side: seals under the lock, sends outside it.
struct TlsWriter(Arc<TlsShared>);

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut records = Vec::with_capacity(buf.len() + buf.len() / 16 + 64);
        let n = {
            let mut c = self.0.lock();
            let n = c.writer().write(buf)?;
            while c.wants_write() {
                c.write_tls(&mut records)?;
            }
            n
        };
        (&self.0.sock).write_all(&records)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reader's side: reads the socket outside the lock, decrypts under it.
struct TlsReader {
    shared: Arc<TlsShared>,
    /// Received bytes not yet given to rustls: `raw[pos..len]`.
    raw: Vec<u8>,
    pos: usize,
    len: usize,
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut c = self.shared.lock();
                match c.reader().read(buf) {
                    // 0: the server sent close_notify.
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.pos < self.len {
                    // rustls takes what its buffers allow; the rest waits.
                    let mut rest = &self.raw[self.pos..self.len];
                    let before = rest.len();
                    c.read_tls(&mut rest)?;
                    self.pos += before - rest.len();
                    c.process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    continue;
                }
            }
            self.pos = 0;
            self.len = (&self.shared.sock).read(&mut self.raw)?;
            if self.len == 0 {
                // End of stream: rustls tells a clean close from a cut one.
                let mut c = self.shared.lock();
                c.read_tls(&mut &[][..])?;
                c.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                return match c.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    r => r,
                };
            }
        }
    }
}
