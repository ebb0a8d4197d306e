//! `idle`: ramp N connections, hold them for T (answering pings), report
//! connect times, errors by kind, and memory per connection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    deflate_json, deflate_warning, latency_json, latency_line, latency_metrics, tls_human,
    tls_json, tls_metrics, Ctx,
};
use std::sync::Arc;

use crate::cli::{parse_mix, IdleArgs};
use crate::client::addr::{AddrPlan, Spread};
use crate::client::{Collected, Fleet, FleetConfig, Totals};
use crate::host::{bytes, group};
use crate::report::{Outcome, Plot};
use crate::sample::{cpu_between, Sample};
use crate::transport::Kind;
use crate::url::UrlTemplate;

/// Memory per connection between two samples.
pub fn memory_json(before: &Sample, at: &Sample, conns: u64) -> (serde_json::Value, String) {
    let n = conns.max(1) as f64;
    let d = |a: u64, b: u64| b as f64 - a as f64;
    let slab = d(before.kernel.slab_bytes, at.kernel.slab_bytes);
    let unrec = d(before.kernel.sunreclaim_bytes, at.kernel.sunreclaim_bytes);
    let avail = d(
        at.kernel.mem_available_bytes,
        before.kernel.mem_available_bytes,
    );
    let server = match (before.server, at.server) {
        (Some(a), Some(b)) => Some(d(a.rss_bytes, b.rss_bytes)),
        _ => None,
    };
    let metrics_rss = match (
        before.metrics.get("ringcast_resident_memory_bytes"),
        at.metrics.get("ringcast_resident_memory_bytes"),
    ) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let server_rss = server.or(metrics_rss);
    // The harness's own share: what a connection costs the load generator
    // (a TLS session is most of it), for sizing the host that runs it.
    let harness = d(before.harness.rss_bytes, at.harness.rss_bytes);
    let v = json!({
        "connections": conns,
        "server_rss_bytes_before": before.server.map(|s| s.rss_bytes),
        "server_rss_bytes": at.server.map(|s| s.rss_bytes),
        "server_rss_delta_bytes": server_rss,
        "server_rss_per_conn_bytes": server_rss.map(|x| x / n),
        "kernel_slab_delta_bytes": slab,
        "kernel_slab_per_conn_bytes": slab / n,
        "kernel_sunreclaim_per_conn_bytes": unrec / n,
        "mem_available_drop_per_conn_bytes": avail / n,
        "tcp_sockets_in_use": at.kernel.tcp_inuse,
        "tcp_buffer_bytes": at.kernel.tcp_mem_bytes,
        "harness_rss_bytes": at.harness.rss_bytes,
        "harness_rss_delta_bytes": harness,
        "harness_rss_per_conn_bytes": harness / n,
        "note": "kernel figures are host-wide: on loopback they cover both ends of each connection",
    });
    let human = format!(
        "  memory at {} connections: server RSS {} ({} per conn); kernel slab +{} ({:.0} B per conn, \
         both ends on loopback; unreclaimable {:.0} B); MemAvailable dropped {:.0} B per conn; harness RSS {} \
         (+{:.0} B per conn)\n",
        group(conns),
        server_rss
            .map(|x| format!("+{}", bytes(x)))
            .unwrap_or_else(|| "unknown (pass --server-pid)".into()),
        server_rss
            .map(|x| format!("{:.0} B", x / n))
            .unwrap_or_else(|| "?".into()),
        bytes(slab),
        slab / n,
        unrec / n,
        avail / n,
        bytes(at.harness.rss_bytes as f64),
        harness / n,
    );
    (v, human)
}

/// Runs the scenario.
pub fn run(a: &IdleArgs) -> Result<Outcome, String> {
    let mut ctx = Ctx::new(&a.common)?;
    // One fleet per transport of the mix (one fleet without --mix).
    let parts: Vec<(Kind, u64, String)> = match &a.mix {
        Some(spec) => {
            let base = UrlTemplate::parse(&a.base_url).map_err(|e| format!("--base-url: {e}"))?;
            let host = base.host;
            // An https:// base gives wss:// and https:// targets.
            let (ws, http) = (base.scheme.websocket().name(), base.scheme.http().name());
            parse_mix(spec, a.conns)?
                .into_iter()
                .map(|(k, n)| {
                    let url = match k {
                        Kind::Ws => format!("{ws}://{host}/ws/{{ch}}"),
                        Kind::Sse => format!("{http}://{host}/sse/{{ch}}"),
                        Kind::Longpoll | Kind::Shortpoll => {
                            format!("{http}://{host}/poll/{{ch}}")
                        }
                    };
                    (k, n, url)
                })
                .collect()
        }
        None => vec![(
            a.transport,
            a.conns,
            a.url.clone().ok_or("--url or --mix is required")?,
        )],
    };
    let mut cfgs = Vec::new();
    for (kind, n, url) in &parts {
        let rate = a.rate.map(|r| r * *n as f64 / a.conns.max(1) as f64);
        cfgs.push(ctx.plan(*kind, url, *n, a.channels, rate, false)?);
    }
    if cfgs.len() > 1 && cfgs.iter().any(|c| !c.addr.src_ips.is_empty()) {
        // Fleets side by side must not bind the same source endpoints: one
        // plan for all connections, a disjoint share for each fleet.
        let c = &ctx.common;
        let source = Spread::parse(&c.source_ips).map_err(|e| format!("--source-ips: {e}"))?;
        let source = if source == Spread::Auto && cfgs[0].url.addr.ip().is_loopback() {
            let n = cfgs
                .iter()
                .map(|c| c.addr.src_ips.len() as u32)
                .sum::<u32>();
            Spread::Count(n.max(1))
        } else {
            source
        };
        let dest = Spread::parse(&c.dest_ips).map_err(|e| format!("--dest-ips: {e}"))?;
        let plan = Arc::new(AddrPlan::new(
            cfgs[0].url.addr,
            &c.nodes,
            a.conns,
            &source,
            &dest,
            ctx.host.ephemeral,
            &ctx.host.listening,
        )?);
        let e = plan.endpoints();
        let mut done = 0u64;
        for c in &mut cfgs {
            let lo = e * done / a.conns.max(1);
            done += c.conns;
            c.endpoint_range = Some((lo, e * done / a.conns.max(1)));
            c.addr = plan.clone();
        }
    }
    let before = ctx.sample(0);
    let mut fleets = Vec::new();
    for c in &cfgs {
        fleets.push(Fleet::start(c.clone())?);
    }
    let refs: Vec<&Fleet> = fleets.iter().collect();
    let cfg_refs: Vec<&FleetConfig> = cfgs.iter().collect();
    let ramp = ctx.ramp_many(&refs, &cfg_refs)?;
    let totals = |fleets: &[Fleet]| {
        let mut t = Totals::default();
        for f in fleets {
            t.add(&f.totals());
        }
        t
    };
    let up = totals(&fleets);
    let rings: usize = fleets.iter().map(|f| f.rings).sum();
    ctx.say(&format!(
        "{} connections open after {:.1} s ({} failed); holding for {:.0} s",
        group(up.open),
        ramp.elapsed_s,
        group(up.failed),
        a.hold
    ));
    let hold_start = ctx.sample(up.open);
    let end = (Instant::now() + Duration::from_secs_f64(a.hold)).min(ctx.deadline);
    let mut last_sample = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(250).min(end - Instant::now().min(end)));
        let t = totals(&fleets);
        ctx.bar.set_message(format!(
            "holding: {} open, {} dropped, {:.0} s left",
            group(t.open),
            group(t.dropped),
            end.saturating_duration_since(Instant::now()).as_secs_f64()
        ));
        if last_sample.elapsed() >= Duration::from_secs(5) {
            last_sample = Instant::now();
            ctx.sample(t.open);
        }
    }
    let held = totals(&fleets);
    let deflate = fleets.iter().any(|f| f.deflate);
    let tls = fleets.iter().find_map(|f| f.tls);
    if let Some(w) = deflate_warning(deflate, &held) {
        ctx.warnings.push(w);
    }
    let hold_end = ctx.sample(held.open);
    let mut collected = Collected::default();
    let mut per_transport = Vec::new();
    for (f, (kind, n, url)) in fleets.iter().zip(&parts) {
        let c = f.collect()?;
        let t = f.totals();
        per_transport.push(json!({
            "transport": kind,
            "url": url,
            "conns": n,
            "connected": t.connected,
            "failed": t.failed,
            "open_at_end_of_hold": t.open,
            "connect_p99_ms": c.connect.summary().p99_ms,
            "tls_handshakes": t.tls_handshakes,
            "tls_resumed": t.tls_resumed,
        }));
        collected.merge(c);
    }
    for f in &mut fleets {
        f.stop();
    }
    // Give the server a moment to see the resets before the last sample.
    std::thread::sleep(Duration::from_secs(2));
    let after = ctx.sample(0);
    ctx.done();

    let hold_cpu = cpu_between(&hold_start, &hold_end);
    ctx.check_cpu(&cpu_between(&before, &hold_start), "ramp");
    let connect = collected.connect.summary();
    let (mem_json, mem_human) = memory_json(&before, &hold_end, held.open);
    let conn_rate = up.connected as f64 / ramp.elapsed_s.max(1e-9);
    if up.failed > 0 {
        ctx.warnings.push(format!(
            "{} of {} connection attempts failed: {:?}",
            group(up.failed),
            group(a.conns),
            collected.errors
        ));
    }
    let json = json!({
        "scenario": "idle",
        "transport": if a.mix.is_some() { json!("mix") } else { json!(a.transport) },
        "url": a.url,
        "mix": per_transport,
        "conns": a.conns,
        "channels": a.channels,
        "rings": rings,
        "connected": up.connected,
        "failed": up.failed,
        "open_at_end_of_hold": held.open,
        "dropped": held.dropped,
        "errors": collected.errors,
        "ramp_s": ramp.elapsed_s,
        "connect_rate_per_s": conn_rate,
        "connect_time": latency_json(&connect),
        "connect_p99_ms": connect.p99_ms,
        "hold_s": a.hold,
        "deflate": deflate_json(deflate, &held),
        "tls": tls_json(
            tls.as_ref(),
            &held,
            Some((&up, ramp.elapsed_s)),
            &collected.handshake,
            &collected.errors,
        ),
        "memory": mem_json,
        "hold_cpu": {
            "server_cpu_s": hold_cpu.server_cpu_s,
            "harness_cpu_s": hold_cpu.harness_cpu_s,
        },
        "kernel_after": after.kernel,
        "samples": ctx.samples,
        "warnings": ctx.warnings,
    });
    let human = format!(
        "idle {} × {} on {} channel(s) ({} rings)\n  connected {} / {} in {:.1} s ({} conn/s), {} failed, \
         {} dropped during the {:.0} s hold\n  connect time: {}\n{}{}{}  hold cpu: server {}, harness {:.2} CPU-s\n{}",
        group(a.conns),
        a.mix.as_deref().unwrap_or(a.transport.name()),
        a.channels,
        rings,
        group(up.connected),
        group(a.conns),
        ramp.elapsed_s,
        group(conn_rate as u64),
        group(up.failed),
        group(held.dropped),
        a.hold,
        latency_line(&connect),
        tls_human(
            tls.as_ref(),
            &held,
            Some((&up, ramp.elapsed_s, "the ramp")),
            &collected.handshake
        ),
        if deflate {
            format!(
                "  permessage-deflate: agreed on {} handshakes, declined on {}\n",
                group(held.deflate_agreed),
                group(held.deflate_declined)
            )
        } else {
            String::new()
        },
        mem_human,
        hold_cpu
            .server_cpu_s
            .map(|s| format!("{s:.2} CPU-s"))
            .unwrap_or_else(|| "unknown".into()),
        hold_cpu.harness_cpu_s,
        if collected.errors.is_empty() {
            String::new()
        } else {
            format!("  errors: {:?}\n", collected.errors)
        }
    );
    let mut metrics = BTreeMap::new();
    latency_metrics(&mut metrics, "connect_", &connect);
    metrics.insert("connected".into(), up.connected as f64);
    metrics.insert("failed".into(), up.failed as f64);
    metrics.insert("dropped".into(), held.dropped as f64);
    metrics.insert("deflate_declined".into(), held.deflate_declined as f64);
    tls_metrics(
        &mut metrics,
        tls.as_ref(),
        &held,
        &collected.handshake,
        &collected.errors,
    );
    let mem_points: Vec<(f64, f64)> = ctx
        .samples
        .iter()
        .map(|s| {
            let server = s.server.map(|p| p.rss_bytes as f64).unwrap_or(0.0);
            let slab = s.kernel.slab_bytes as f64 - before.kernel.slab_bytes as f64;
            (s.open as f64, (server + slab) / 1048576.0)
        })
        .collect();
    let slab_points: Vec<(f64, f64)> = ctx
        .samples
        .iter()
        .map(|s| {
            (
                s.open as f64,
                (s.kernel.slab_bytes as f64 - before.kernel.slab_bytes as f64) / 1048576.0,
            )
        })
        .collect();
    let plots = vec![
        Plot {
            file: "connect-rate".into(),
            title: "Connect rate over time".into(),
            x_label: "seconds".into(),
            y_label: "connections/s".into(),
            series: vec![("connect rate".into(), ramp.rate_series.clone())],
            log_x: false,
        },
        Plot {
            file: "open-connections".into(),
            title: "Open connections over time".into(),
            x_label: "seconds".into(),
            y_label: "connections".into(),
            series: vec![("open".into(), ramp.open_series.clone())],
            log_x: false,
        },
        Plot {
            file: "memory".into(),
            title: "Memory versus connections".into(),
            x_label: "open connections".into(),
            y_label: "MiB".into(),
            series: vec![
                ("server RSS + kernel slab growth".into(), mem_points),
                ("kernel slab growth (both ends)".into(), slab_points),
            ],
            log_x: false,
        },
    ];
    Ok(Outcome {
        scenario: "idle",
        json,
        human,
        metrics,
        plots,
        warnings: ctx.warnings.clone(),
    })
}
