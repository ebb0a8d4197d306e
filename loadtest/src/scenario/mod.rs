//! Scenarios and the machinery they share: the start-up plan and its
//! checks, the connection ramp, one measured publish phase, sampling, and
//! the live progress line.

pub mod churn;
pub mod compare;
pub mod fanout;
pub mod idle;
pub mod throughput;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ringcast_uring::{Ring, RingConfig};
use serde_json::json;

use crate::cli::{Common, PubArgs};
use crate::client::addr::{AddrPlan, Spread};
use crate::client::{Collected, Fleet, FleetConfig, FleetTls, Phase, Totals};
use crate::host::{bytes, group, HostFacts};
use crate::marker::now_nanos;
use crate::publish::{publish, PublishConfig, PublishProgress, PublishResult};
use crate::report::Series;
use crate::sample::{cpu_between, CpuUse, Sample, Sampler};
use crate::stats::{LatencyHist, LatencySummary};
use crate::tls::{Mode, Switch, Trust};
use crate::transport::Kind;
use crate::url::{Scheme, UrlTemplate};

/// Kernel memory per connection *pair* on loopback (client + server
/// socket, inode, file, armed receive), measured on the reference host.
const KERNEL_PER_PAIR: u64 = 9_700;
/// This harness's own memory per connection (state, buffers), generous.
const HARNESS_PER_CONN: u64 = 600;
/// What a TLS session adds to that on the harness's side: rustls's state,
/// aws-lc's keys, malloc's share (measured 4.6 KB per idle connection at
/// 12,000 and 15,000, `tests/tls.rs`), rounded up.
const HARNESS_TLS_PER_CONN: u64 = 5_000;

/// A run in progress: options, host facts, samples, progress display.
pub struct Ctx {
    /// Shared options.
    pub common: Common,
    /// Host facts.
    pub host: HostFacts,
    /// Sampler.
    pub sampler: Sampler,
    /// Run start.
    pub t0: Instant,
    /// Give up after this.
    pub deadline: Instant,
    /// Live display.
    pub bar: ProgressBar,
    /// Every sample taken.
    pub samples: Vec<Sample>,
    /// Warnings for the summary.
    pub warnings: Vec<String>,
    next_run: u32,
    /// The note that `--deflate` leaves other transports alone was given.
    deflate_noted: bool,
    /// The run's TLS client, made for the first `wss://` or `https://` target.
    tls: Option<Arc<crate::tls::Client>>,
    /// The note that the TLS options apply to TLS targets only was given.
    tls_noted: bool,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

/// A connection ramp's figures.
#[derive(Debug, Clone, Default)]
pub struct Ramp {
    /// Seconds from the first attempt to the last one finishing.
    pub elapsed_s: f64,
    /// Counters at the end.
    pub totals: Totals,
    /// `(seconds, open connections)` over the ramp.
    pub open_series: Vec<(f64, f64)>,
    /// `(seconds, connections/s)` over the ramp.
    pub rate_series: Vec<(f64, f64)>,
    /// Whether every attempt finished before the deadline.
    pub complete: bool,
}

/// One measured publish phase.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Exact delivery results.
    pub collected: Collected,
    /// Publisher figures.
    pub publish: PublishResult,
    /// CPU use over the phase.
    pub cpu: CpuUse,
    /// Samples around it.
    pub before: Sample,
    /// Sample at its end.
    pub after: Sample,
    /// Counter deltas over the phase.
    pub delta: Totals,
    /// Counters at its end (connections that agreed on permessage-deflate
    /// are counted once per handshake, before the phase or during it).
    pub totals: Totals,
    /// The subscribers offered permessage-deflate.
    pub deflate: bool,
    /// The subscribers spoke TLS, set up so.
    pub tls: Option<Mode>,
    /// Seconds from first intended send to the end of the drain.
    pub duration_s: f64,
    /// `(seconds, p99 ms)` per progress tick.
    pub p99_series: Vec<(f64, f64)>,
}

impl Ctx {
    /// Prepares a run: host facts, sampler check, progress display.
    pub fn new(common: &Common) -> Result<Ctx, String> {
        let host = HostFacts::read();
        let metrics_url = common
            .metrics_url
            .as_deref()
            .map(UrlTemplate::parse)
            .transpose()
            .map_err(|e| format!("--metrics-url: {e}"))?;
        if metrics_url
            .as_ref()
            .is_some_and(|u| u.scheme != Scheme::Http)
        {
            return Err("--metrics-url: must be an http:// URL".into());
        }
        let sampler = Sampler {
            pids: common.server_pid.clone(),
            metrics_url,
        };
        sampler.check()?;
        for t in &common.fail_if {
            crate::report::Threshold::parse(t)?;
        }
        let bar = if common.json {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            let b = ProgressBar::new_spinner();
            b.set_draw_target(ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        };
        let t0 = Instant::now();
        Ok(Ctx {
            common: common.clone(),
            host,
            sampler,
            t0,
            deadline: t0 + Duration::from_secs_f64(common.max_time.max(1.0)),
            bar,
            samples: Vec::new(),
            warnings: Vec::new(),
            deflate_noted: false,
            tls: None,
            tls_noted: false,
            next_run: (std::process::id() % 10_000) * 100_000
                + (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() % 100_000) as u32),
        })
    }

    /// Seconds since the start.
    pub fn t(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Takes and keeps a sample.
    pub fn sample(&mut self, open: u64) -> Sample {
        let s = self.sampler.sample(self.t(), open);
        self.samples.push(s.clone());
        s
    }

    /// A new run id for the markers.
    pub fn run_id(&mut self) -> u32 {
        self.next_run = self.next_run.wrapping_add(1);
        self.next_run
    }

    /// Prints a line above the progress display (stderr; nothing with --json).
    pub fn say(&self, s: &str) {
        if !self.common.json {
            self.bar.suspend(|| eprintln!("{s}"));
        }
    }

    /// The run's TLS client, made once from `--ca`/`--insecure`,
    /// `--tls-version` and `--tls-resume`.
    pub fn tls_client(&mut self) -> Result<Arc<crate::tls::Client>, String> {
        if let Some(c) = &self.tls {
            return Ok(c.clone());
        }
        let c = &self.common;
        let trust = match (&c.ca, c.insecure) {
            (_, true) => Trust::Anything,
            (Some(path), false) => Trust::from_pem_file(path)?,
            (None, false) => {
                return Err(
                    "a wss:// or https:// target needs --ca PATH (the CA certificate \
                            the server's certificate chains to), or --insecure to skip \
                            verification (dangerous)"
                        .into(),
                )
            }
        };
        let client = Arc::new(crate::tls::Client::new(
            trust,
            c.tls_version,
            c.tls_resume == Switch::On,
        )?);
        if c.insecure {
            self.warnings.push(
                "TLS certificates were NOT verified (--insecure): the numbers are real, the \
                 server's identity was not checked"
                    .into(),
            );
        }
        self.tls = Some(client.clone());
        Ok(client)
    }

    /// The TLS server name for `url`: `--tls-server-name`, or its host.
    fn tls_name(
        &self,
        url: &UrlTemplate,
    ) -> Result<rustls::pki_types::ServerName<'static>, String> {
        let host = self
            .common
            .tls_server_name
            .as_deref()
            .unwrap_or(url.hostname());
        crate::tls::server_name(host)
    }

    /// What a plaintext target says about TLS options given anyway.
    fn note_tls_options(&mut self) {
        let c = &self.common;
        let given = c.ca.is_some()
            || c.insecure
            || c.tls_version.is_some()
            || c.tls_server_name.is_some()
            || c.tls_resume == Switch::Off;
        if given && !self.tls_noted {
            self.tls_noted = true;
            self.say("note: the TLS options apply to wss:// and https:// targets only; this one is plaintext");
        }
    }

    /// Builds the fleet configuration, prints what the run needs, and
    /// refuses when the host cannot provide it.
    pub fn plan(
        &mut self,
        kind: Kind,
        url: &str,
        conns: u64,
        channels: u32,
        connect_rate: Option<f64>,
        want_ids: bool,
    ) -> Result<FleetConfig, String> {
        let url = UrlTemplate::parse(url)?;
        if url.scheme.is_websocket() != (kind == Kind::Ws) {
            return Err(format!(
                "{url}: transport {} needs a {} URL",
                kind.name(),
                if kind == Kind::Ws {
                    "ws:// or wss://"
                } else {
                    "http:// or https://"
                }
            ));
        }
        let tls = if url.scheme.is_tls() {
            Some(FleetTls {
                client: self.tls_client()?,
                name: self.tls_name(&url)?,
            })
        } else {
            self.note_tls_options();
            None
        };
        if self.common.deflate && kind != Kind::Ws && !self.deflate_noted {
            self.deflate_noted = true;
            self.say("note: --deflate applies to WebSocket subscribers only; other transports run as usual");
        }
        if !url.has_channel() && channels > 1 {
            return Err(format!(
                "{url}: no {{ch}} placeholder but --channels {channels}"
            ));
        }
        if conns == 0 || channels == 0 {
            return Err("connections and channels must be at least 1".into());
        }
        let c = &self.common;
        let source = Spread::parse(&c.source_ips).map_err(|e| format!("--source-ips: {e}"))?;
        let dest = Spread::parse(&c.dest_ips).map_err(|e| format!("--dest-ips: {e}"))?;
        let addr = AddrPlan::new(
            url.addr,
            &c.nodes,
            conns,
            &source,
            &dest,
            self.host.ephemeral,
            &self.host.listening,
        )?;
        let hard = self.host.nofile.1.min(u64::from(u32::MAX)) as u32;
        let mut per_ring = c.per_ring.max(1);
        if per_ring > hard {
            self.warnings.push(format!(
                "--per-ring {per_ring} is above the open-files limit {hard}; using {hard}"
            ));
            per_ring = hard;
        }
        let rings = Fleet::rings_for(conns, per_ring);
        // io_uring must be there, with every opcode the engine uses.
        let probe = Ring::new(RingConfig {
            sq: 8,
            cq: 16,
            slots: 16,
            buffers: None,
        })
        .map_err(|e| crate::client::explain_setup_error(&e))?;
        crate::client::check_opcodes(&probe)?;
        drop(probe);
        let loopback = url.addr.ip().is_loopback();
        let kernel = conns
            * if loopback {
                KERNEL_PER_PAIR
            } else {
                KERNEL_PER_PAIR / 2
            };
        let per_conn = HARNESS_PER_CONN
            + if tls.is_some() {
                HARNESS_TLS_PER_CONN
            } else {
                0
            };
        let need = kernel + conns * per_conn + ((rings as u64) << 23);
        let avail = self.host.mem_available;
        self.say(&format!(
            "plan: {} {}{} connections to {url} over {channels} channel(s): {rings} ring(s) × ≤{} \
             direct descriptors (open-files limit {} per ring, not per process), ≤{} handshakes \
             in flight per ring; {}; ≈{} of memory ({}kernel sockets{}) of {} available",
            group(conns),
            kind.name(),
            tls.as_ref()
                .map(|t| format!(
                    " ({}, server name {})",
                    t.client.mode.describe(),
                    t.name.to_str()
                ))
                .unwrap_or_default(),
            group(u64::from(per_ring)),
            group(hard.into()),
            c.inflight,
            addr.describe(),
            bytes(need as f64),
            if loopback { "both ends' " } else { "" },
            if loopback {
                ", client and server on this host"
            } else {
                ""
            },
            bytes(avail as f64),
        ));
        if avail > 0 && need > avail / 10 * 9 {
            return Err(format!(
                "this run needs about {} of memory but only {} is available: lower the \
                 connection count",
                bytes(need as f64),
                bytes(avail as f64)
            ));
        }
        if let Some(tw) = self.host.max_tw_buckets {
            if conns > tw {
                self.say(&format!(
                    "note: connections close with a reset (SO_LINGER 0), so the {} TIME_WAIT \
                     buckets of this host are not a limit",
                    group(tw)
                ));
            }
        }
        Ok(FleetConfig {
            kind,
            url,
            conns,
            channels,
            channel_prefix: c.channel_prefix.clone(),
            per_ring,
            inflight: c.inflight.max(1),
            connect_rate: connect_rate.filter(|r| *r > 0.0),
            connect_timeout: Duration::from_secs_f64(c.connect_timeout.max(0.1)),
            addr: Arc::new(addr),
            want_ids,
            poll_timeout_s: c.poll_timeout.round().max(1.0) as u32,
            poll_interval: Duration::from_secs_f64(c.poll_interval.max(0.01)),
            resume_param: c.resume_param.clone(),
            headers: c.headers.clone(),
            deflate: c.deflate && kind == Kind::Ws,
            endpoint_range: None,
            tls,
        })
    }

    /// Waits until every connection attempt has finished (or the ramp
    /// deadline), updating the display. Fails when not one connection
    /// succeeded: the target is unreachable or not what the URL says.
    pub fn ramp(&mut self, fleet: &Fleet, cfg: &FleetConfig) -> Result<Ramp, String> {
        self.ramp_many(&[fleet], &[cfg])
    }

    /// [`Ctx::ramp`] over fleets running side by side.
    pub fn ramp_many(&mut self, fleets: &[&Fleet], cfgs: &[&FleetConfig]) -> Result<Ramp, String> {
        let start = Instant::now();
        let conns: u64 = cfgs.iter().map(|c| c.conns).sum();
        let Some(cfg) = cfgs.first() else {
            return Err("internal: no fleet to ramp".into());
        };
        let per_sec_floor = cfg.connect_rate.unwrap_or(1_000.0).min(1_000.0);
        let budget = cfg.connect_timeout.as_secs_f64() + conns as f64 / per_sec_floor + 30.0;
        let deadline = (start + Duration::from_secs_f64(budget)).min(self.deadline);
        let mut r = Ramp::default();
        let mut last = (0.0, 0u64);
        let mut last_sample = Instant::now() - Duration::from_secs(5);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let mut t = Totals::default();
            for f in fleets {
                t.add(&f.totals());
            }
            let el = start.elapsed().as_secs_f64();
            let rate = (t.connected - last.1) as f64 / (el - last.0).max(1e-3);
            last = (el, t.connected);
            r.open_series.push((el, t.open as f64));
            r.rate_series.push((el, rate));
            self.bar.set_message(format!(
                "connecting: {} open, {} in flight, {}/s, {} failed",
                group(t.open),
                group(t.connecting),
                group(rate as u64),
                group(t.failed)
            ));
            if last_sample.elapsed() >= Duration::from_secs(1) {
                last_sample = Instant::now();
                self.sample(t.open);
            }
            r.totals = t;
            if t.connected + t.failed >= conns {
                r.complete = true;
                break;
            }
            if Instant::now() >= deadline {
                self.warnings.push(format!(
                    "ramp stopped at its deadline ({budget:.0} s) with {} of {} attempts finished",
                    group(t.connected + t.failed),
                    group(conns)
                ));
                break;
            }
        }
        r.elapsed_s = start.elapsed().as_secs_f64();
        if r.totals.connected == 0 {
            let mut errors = BTreeMap::new();
            for f in fleets {
                for (k, v) in f.collect().map(|c| c.errors).unwrap_or_default() {
                    *errors.entry(k).or_insert(0u64) += v;
                }
            }
            return Err(format!(
                "not one of {} connections to {} succeeded: {errors:?}",
                group(conns),
                cfg.url
            ));
        }
        Ok(r)
    }

    /// Publishes one phase and checks every delivery.
    pub fn measure(
        &mut self,
        fleet: &Fleet,
        channels: u32,
        pubargs: &PubArgs,
        msgs: u64,
        rate: f64,
        label: &str,
    ) -> Result<Measured, String> {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err("--rate must be a positive number of messages per second".into());
        }
        let url = UrlTemplate::parse(&pubargs.pub_url).map_err(|e| format!("--pub-url: {e}"))?;
        let tls = match url.scheme {
            Scheme::Http => None,
            Scheme::Https => Some(crate::publish::PublishTls {
                config: self.tls_client()?.publisher_config(),
                name: self.tls_name(&url)?,
            }),
            _ => return Err(format!("--pub-url {url}: must be http:// or https://")),
        };
        let run = self.run_id();
        fleet.set_phase(Phase::round_robin(run, channels, msgs))?;
        let before_totals = fleet.totals();
        let before = self.sample(before_totals.open);
        let start_ns = now_nanos() + 20_000_000;
        let pcfg = PublishConfig {
            url,
            channels,
            channel_prefix: self.common.channel_prefix.clone(),
            msgs,
            rate,
            size: pubargs.size,
            payload: pubargs.payload,
            payload_seed: pubargs.payload_seed,
            run,
            conns: pubargs.pub_conns.max(1),
            start_ns,
            tls,
        };
        let stop = AtomicBool::new(false);
        let progress = PublishProgress::default();
        let mut p99_series = Vec::new();
        let planned = msgs as f64 / rate;
        let hard_stop =
            (Instant::now() + Duration::from_secs_f64(planned * 3.0 + 60.0)).min(self.deadline);
        let publish_result = std::thread::scope(|s| {
            let h = s.spawn(|| publish(&pcfg, &stop, &progress));
            let mut last = (Instant::now(), before_totals.deliveries);
            while !h.is_finished() {
                std::thread::sleep(Duration::from_millis(250));
                let t = fleet.totals();
                let live = fleet.take_live();
                let dt = last.0.elapsed().as_secs_f64().max(1e-3);
                let rate_now = (t.deliveries - last.1) as f64 / dt;
                last = (Instant::now(), t.deliveries);
                let p99 = live.quantile_ms(0.99);
                if live.count() > 0 {
                    p99_series.push((self.t(), p99));
                }
                self.bar.set_message(format!(
                    "{label}: published {}/{}, {} deliveries/s, p99 {p99:.1} ms, {} open, {} dropped",
                    group(progress.sent.load(Ordering::Relaxed)),
                    group(msgs),
                    group(rate_now as u64),
                    group(t.open),
                    group(t.dropped)
                ));
                if Instant::now() > hard_stop {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            h.join()
                .unwrap_or_else(|_| Err("publisher panicked".to_string()))
        })?;
        // Drain: wait for late deliveries until nothing is missing.
        let drain_end = Instant::now() + Duration::from_secs_f64(pubargs.drain);
        let mut collected = fleet.collect()?;
        while collected.counts.lost > 0 && Instant::now() < drain_end.min(self.deadline) {
            std::thread::sleep(Duration::from_millis(100));
            collected = fleet.collect()?;
            self.bar.set_message(format!(
                "{label}: draining, {} deliveries missing",
                group(collected.counts.lost)
            ));
        }
        let after_totals = fleet.totals();
        let after = self.sample(after_totals.open);
        let cpu = cpu_between(&before, &after);
        let duration_s = (now_nanos().saturating_sub(start_ns)) as f64 / 1e9;
        let m = Measured {
            collected,
            publish: publish_result,
            cpu,
            before,
            after,
            delta: delta(&before_totals, &after_totals),
            totals: after_totals,
            deflate: fleet.deflate,
            tls: fleet.tls,
            duration_s,
            p99_series,
        };
        self.check_cpu(&m.cpu, label);
        // Once per fleet is enough: its counts only grow from phase to phase.
        if let Some(w) = deflate_warning(m.deflate, &m.totals) {
            if !self.warnings.iter().any(|o| o.contains(DECLINED)) {
                self.warnings.push(format!("{label}: {w}"));
            }
        }
        if m.publish.max_lag_ms > 50.0 {
            self.warnings.push(format!(
                "{label}: the publisher fell up to {:.0} ms behind its schedule; latencies \
                 include that (as clients would see it), but the publisher may be what limits \
                 the rate — add --pub-conns",
                m.publish.max_lag_ms
            ));
        }
        Ok(m)
    }

    /// Warns when this host's CPUs were saturated during a measurement.
    pub fn check_cpu(&mut self, cpu: &CpuUse, label: &str) {
        let cpus = self.host.cpus as f64;
        if cpu.harness_cores > 0.8 * cpus.clamp(1.0, 2.0) {
            self.warnings.push(format!(
                "{label}: the harness used {:.2} CPU cores of {cpus}: it may have been the \
                 bottleneck; run it on another host or with fewer connections",
                cpu.harness_cores
            ));
        }
        if cpu.host_busy > 0.9 {
            self.warnings.push(format!(
                "{label}: the host's CPUs were {:.0}% busy (harness {:.2} cores{}): latency \
                 includes CPU contention between harness and server",
                cpu.host_busy * 100.0,
                cpu.harness_cores,
                cpu.server_cpu_s
                    .map(|s| format!(", server {s:.2} CPU-s"))
                    .unwrap_or_default()
            ));
        }
    }

    /// Finishes the display.
    pub fn done(&self) {
        self.bar.finish_and_clear();
    }
}

/// Counter deltas.
pub fn delta(a: &Totals, b: &Totals) -> Totals {
    Totals {
        open: b.open,
        connecting: b.connecting,
        connected: b.connected - a.connected,
        failed: b.failed - a.failed,
        dropped: b.dropped - a.dropped,
        deliveries: b.deliveries - a.deliveries,
        bytes_in: b.bytes_in - a.bytes_in,
        bytes_out: b.bytes_out - a.bytes_out,
        requests: b.requests - a.requests,
        reconnects: b.reconnects - a.reconnects,
        nobufs: b.nobufs - a.nobufs,
        deflate_agreed: b.deflate_agreed - a.deflate_agreed,
        deflate_declined: b.deflate_declined - a.deflate_declined,
        compressed: b.compressed - a.compressed,
        message_bytes: b.message_bytes - a.message_bytes,
        tls_handshakes: b.tls_handshakes - a.tls_handshakes,
        tls_resumed: b.tls_resumed - a.tls_resumed,
        tls13: b.tls13 - a.tls13,
        tls12: b.tls12 - a.tls12,
    }
}

/// TLS as JSON: how it was set up, the handshakes completed (`totals`,
/// since the fleet started), how many resumed, the version, the handshake
/// time, and — over `during`, a phase or the ramp, with its seconds — the
/// handshake rate. `{"enabled": false}` for plaintext runs.
pub fn tls_json(
    mode: Option<&Mode>,
    totals: &Totals,
    during: Option<(&Totals, f64)>,
    handshake: &LatencyHist,
    errors: &BTreeMap<String, u64>,
) -> serde_json::Value {
    let Some(mode) = mode else {
        return json!({ "enabled": false });
    };
    let time = handshake.summary();
    let mut v = json!({
        "enabled": true,
        "version_offered": mode.version.map_or(json!(["1.3", "1.2"]), |v| json!([v])),
        "resumption": mode.resumption,
        "verified": mode.verified,
        "handshakes": totals.tls_handshakes,
        "resumed": totals.tls_resumed,
        "full": totals.tls_handshakes - totals.tls_resumed,
        "tls13": totals.tls13,
        "tls12": totals.tls12,
        "version": tls_version(totals),
        "handshake_time": latency_json(&time),
        "handshake_p50_ms": time.p50_ms,
        "handshake_p99_ms": time.p99_ms,
        "failed": tls_failures(errors),
    });
    if let (Some((d, secs)), Some(o)) = (during, v.as_object_mut()) {
        o.insert(
            "during".into(),
            json!({
                "seconds": secs,
                "handshakes": d.tls_handshakes,
                "resumed": d.tls_resumed,
                "handshakes_per_s": d.tls_handshakes as f64 / secs.max(1e-9),
            }),
        );
    }
    v
}

/// The negotiated version: `1.3`, `1.2`, `mixed`, or `none` before any
/// handshake completed.
fn tls_version(t: &Totals) -> &'static str {
    match (t.tls13 > 0, t.tls12 > 0) {
        (true, false) => "1.3",
        (false, true) => "1.2",
        (true, true) => "mixed",
        (false, false) => "none",
    }
}

/// Attempts that failed in TLS (their labels start with `tls_`).
fn tls_failures(errors: &BTreeMap<String, u64>) -> u64 {
    errors
        .iter()
        .filter(|(k, _)| k.starts_with("tls_"))
        .map(|(_, v)| v)
        .sum()
}

/// TLS on one line (nothing for plaintext runs); `during` names its span.
pub fn tls_human(
    mode: Option<&Mode>,
    totals: &Totals,
    during: Option<(&Totals, f64, &str)>,
    handshake: &LatencyHist,
) -> String {
    let Some(mode) = mode else {
        return String::new();
    };
    let time = handshake.summary();
    let mut s = format!(
        "  tls: {}; negotiated {}; {} handshakes ({} resumed, {} full); handshake done after \
         p50 {:.2} ms  p99 {:.2} ms (from socket creation)",
        mode.describe(),
        tls_version(totals),
        group(totals.tls_handshakes),
        group(totals.tls_resumed),
        group(totals.tls_handshakes - totals.tls_resumed),
        time.p50_ms,
        time.p99_ms,
    );
    if let Some((d, secs, what)) = during.filter(|(d, _, _)| d.tls_handshakes > 0) {
        s.push_str(&format!(
            "; during {what}: {} handshakes ({} resumed), {:.0}/s",
            group(d.tls_handshakes),
            group(d.tls_resumed),
            d.tls_handshakes as f64 / secs.max(1e-9)
        ));
    }
    s.push('\n');
    s
}

/// TLS figures for `--fail-if`: `tls_handshakes`, `tls_resumed`,
/// `tls_full`, `tls_failed`, `tls_handshake_p50`/`_p99` (ms).
pub fn tls_metrics(
    m: &mut BTreeMap<String, f64>,
    mode: Option<&Mode>,
    totals: &Totals,
    handshake: &LatencyHist,
    errors: &BTreeMap<String, u64>,
) {
    if mode.is_none() {
        return;
    }
    let time = handshake.summary();
    for (k, v) in [
        ("tls_handshakes", totals.tls_handshakes as f64),
        ("tls_resumed", totals.tls_resumed as f64),
        (
            "tls_full",
            (totals.tls_handshakes - totals.tls_resumed) as f64,
        ),
        ("tls_failed", tls_failures(errors) as f64),
        ("tls_handshake_p50", time.p50_ms),
        ("tls_handshake_p99", time.p99_ms),
    ] {
        m.insert(k.to_string(), v);
    }
}

/// What permessage-deflate negotiation came to, as JSON: whether it was
/// offered, and on how many handshakes the server agreed or declined.
pub fn deflate_json(offered: bool, t: &Totals) -> serde_json::Value {
    json!({
        "offered": offered,
        "agreed": t.deflate_agreed,
        "declined": t.deflate_declined,
    })
}

/// What [`deflate_warning`] says.
const DECLINED: &str = "declined permessage-deflate";

/// A warning when the server declined permessage-deflate on some
/// handshakes: those connections were measured uncompressed.
pub fn deflate_warning(offered: bool, t: &Totals) -> Option<String> {
    (offered && t.deflate_declined > 0).then(|| {
        format!(
            "the server {DECLINED} on {} of {} handshakes; those connections ran uncompressed",
            group(t.deflate_declined),
            group(t.deflate_agreed + t.deflate_declined)
        )
    })
}

/// The latency summary as JSON.
pub fn latency_json(s: &LatencySummary) -> serde_json::Value {
    serde_json::to_value(s).unwrap_or_default()
}

/// Adds the latency percentiles of `s` to `m` under `prefix`.
pub fn latency_metrics(m: &mut BTreeMap<String, f64>, prefix: &str, s: &LatencySummary) {
    for (k, v) in [
        ("p50", s.p50_ms),
        ("p90", s.p90_ms),
        ("p99", s.p99_ms),
        ("p999", s.p999_ms),
        ("max", s.max_ms),
    ] {
        m.insert(format!("{prefix}{k}"), v);
    }
}

/// Formats a latency summary on one line.
pub fn latency_line(s: &LatencySummary) -> String {
    format!(
        "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} samples)",
        s.p50_ms,
        s.p90_ms,
        s.p99_ms,
        s.p999_ms,
        s.max_ms,
        group(s.count)
    )
}

/// The measured phase as JSON and metrics.
pub fn measured_json(
    m: &Measured,
    subs_expected: u64,
) -> (serde_json::Value, BTreeMap<String, f64>) {
    let c = &m.collected.counts;
    let lat = m.collected.latency.summary();
    let server_cpu = m.cpu.server_cpu_s;
    let delivered = c.received - c.duplicates;
    // Bytes per delivered message: every byte received in the phase
    // (handshakes, pings and envelopes included) over the messages of this
    // run that arrived.
    let per_delivery = |bytes: u64| {
        if delivered > 0 {
            bytes as f64 / delivered as f64
        } else {
            0.0
        }
    };
    let per_1000 = server_cpu.map(|s| {
        if delivered > 0 {
            s / delivered as f64 * 1000.0
        } else {
            0.0
        }
    });
    let v = json!({
        "subscribers": m.collected.subscribers,
        "subscribers_requested": subs_expected,
        "latency": latency_json(&lat),
        "p50_ms": lat.p50_ms,
        "p99_ms": lat.p99_ms,
        "p999_ms": lat.p999_ms,
        "max_ms": lat.max_ms,
        "expected": c.expected,
        "received": c.received,
        "lost": c.lost,
        "duplicates": c.duplicates,
        "out_of_order": c.out_of_order,
        "unexpected": c.unexpected,
        "foreign": c.foreign,
        "resets": c.resets,
        "loss_ratio": c.loss_ratio(),
        "deliveries_per_s": if m.duration_s > 0.0 { delivered as f64 / m.duration_s } else { 0.0 },
        "duration_s": m.duration_s,
        "bytes_in_per_delivery": per_delivery(m.delta.bytes_in),
        "message_bytes_per_delivery": per_delivery(m.delta.message_bytes),
        "messages_received": m.delta.deliveries,
        "compressed_deliveries": m.delta.compressed,
        "deflate": deflate_json(m.deflate, &m.totals),
        "requests": m.delta.requests,
        "requests_per_s": if m.duration_s > 0.0 { m.delta.requests as f64 / m.duration_s } else { 0.0 },
        "tls": tls_json(
            m.tls.as_ref(),
            &m.totals,
            Some((&m.delta, m.duration_s)),
            &m.collected.handshake,
            &m.collected.errors,
        ),
        "dropped": m.delta.dropped,
        "publish": {
            "sent": m.publish.sent,
            "ok": m.publish.ok,
            "errors": m.publish.errors,
            "max_lag_ms": m.publish.max_lag_ms,
            "ack": latency_json(&m.publish.ack.summary()),
        },
        "cpu": {
            "server_cpu_s": server_cpu,
            "server_cpu_s_per_1000_deliveries": per_1000,
            "harness_cpu_s": m.cpu.harness_cpu_s,
            "harness_cores": m.cpu.harness_cores,
            "host_busy_ratio": m.cpu.host_busy,
        },
    });
    let mut metrics = BTreeMap::new();
    latency_metrics(&mut metrics, "", &lat);
    tls_metrics(
        &mut metrics,
        m.tls.as_ref(),
        &m.totals,
        &m.collected.handshake,
        &m.collected.errors,
    );
    for (k, val) in [
        ("loss", c.loss_ratio()),
        ("lost", c.lost as f64),
        ("duplicates", c.duplicates as f64),
        ("out_of_order", c.out_of_order as f64),
        ("unexpected", c.unexpected as f64),
        ("dropped", m.delta.dropped as f64),
        ("bytes_in_per_delivery", per_delivery(m.delta.bytes_in)),
        ("compressed_deliveries", m.delta.compressed as f64),
        ("deflate_declined", m.totals.deflate_declined as f64),
        (
            "publish_errors",
            m.publish.errors.values().sum::<u64>() as f64,
        ),
    ] {
        metrics.insert(k.to_string(), val);
    }
    (v, metrics)
}

/// The delivery check on a few lines.
pub fn measured_human(m: &Measured) -> String {
    let c = &m.collected.counts;
    let lat = m.collected.latency.summary();
    let mut s = format!(
        "  latency (from intended send): {}\n  deliveries: {} expected, {} received, {} lost, {} \
         duplicates, {} out of order, {} unexpected\n",
        latency_line(&lat),
        group(c.expected),
        group(c.received),
        group(c.lost),
        group(c.duplicates),
        group(c.out_of_order),
        group(c.unexpected),
    );
    if c.resets > 0 || c.foreign > 0 {
        s.push_str(&format!(
            "  notices: {} resets, {} frames without this run's marker\n",
            group(c.resets),
            group(c.foreign)
        ));
    }
    let delivered = c.received - c.duplicates;
    let per_delivery = |bytes: u64| bytes as f64 / delivered.max(1) as f64;
    s.push_str(&format!(
        "  throughput: {} deliveries/s over {:.1} s; {:.0} bytes received per delivery on the \
         wire, for {:.0} bytes of message\n",
        group((delivered as f64 / m.duration_s.max(1e-9)) as u64),
        m.duration_s,
        per_delivery(m.delta.bytes_in),
        per_delivery(m.delta.message_bytes),
    ));
    if m.deflate {
        s.push_str(&format!(
            "  permessage-deflate: agreed on {} handshakes, declined on {}; {} of {} messages \
             arrived compressed\n",
            group(m.totals.deflate_agreed),
            group(m.totals.deflate_declined),
            group(m.delta.compressed),
            group(m.delta.deliveries),
        ));
    }
    s.push_str(&tls_human(
        m.tls.as_ref(),
        &m.totals,
        Some((&m.delta, m.duration_s, "the phase")),
        &m.collected.handshake,
    ));
    let ack = m.publish.ack.summary();
    s.push_str(&format!(
        "  publisher: {} sent, {} ok, errors {:?}, max lag {:.1} ms; answered (from intended send) p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n",
        group(m.publish.sent),
        group(m.publish.ok),
        m.publish.errors,
        m.publish.max_lag_ms,
        ack.p50_ms,
        ack.p99_ms,
        ack.max_ms
    ));
    s.push_str(&cpu_line(&m.cpu, delivered));
    s
}

/// CPU use on one line.
pub fn cpu_line(cpu: &CpuUse, delivered: u64) -> String {
    let server = match cpu.server_cpu_s {
        Some(s) if delivered > 0 => format!(
            "server {s:.2} CPU-s ({:.3} CPU-s per 1,000 deliveries), ",
            s / delivered as f64 * 1000.0
        ),
        Some(s) => format!("server {s:.2} CPU-s, "),
        None => "server CPU unknown (pass --server-pid), ".into(),
    };
    format!(
        "  cpu: {server}harness {:.2} CPU-s ({:.2} cores), host {:.0}% busy\n",
        cpu.harness_cpu_s,
        cpu.harness_cores,
        cpu.host_busy * 100.0
    )
}

/// Latency CDF series.
pub fn cdf_series(name: &str, c: &Collected) -> Series {
    (name.to_string(), c.latency.cdf())
}
