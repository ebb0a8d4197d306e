//! `compare`: the same fan-out over each transport (short polling at each
//! interval), one after the other against the same server, and one table:
//! delivery latency, server CPU per 1,000 deliveries, bytes on the wire
//! per delivered message, HTTP requests per second, server memory per
//! client.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::idle::memory_json;
use super::{measured_json, Ctx};
use crate::cli::{CompareArgs, PubArgs};
use crate::client::Fleet;
use crate::host::group;
use crate::report::{Outcome, Plot};
use crate::transport::Kind;
use crate::url::UrlTemplate;

/// Runs the scenario.
pub fn run(a: &CompareArgs) -> Result<Outcome, String> {
    let mut ctx = Ctx::new(&a.common)?;
    let base = UrlTemplate::parse(&a.base_url).map_err(|e| format!("--base-url: {e}"))?;
    let host = base.host.clone();
    // An https:// base gives wss:// and https:// targets.
    let (ws, http) = (base.scheme.websocket().name(), base.scheme.http().name());
    let url_for = |k: Kind| -> String {
        match k {
            Kind::Ws => a
                .ws_url
                .clone()
                .unwrap_or_else(|| format!("{ws}://{host}/ws/{{ch}}")),
            Kind::Sse => a
                .sse_url
                .clone()
                .unwrap_or_else(|| format!("{http}://{host}/sse/{{ch}}")),
            Kind::Longpoll | Kind::Shortpoll => a
                .poll_url
                .clone()
                .unwrap_or_else(|| format!("{http}://{host}/poll/{{ch}}")),
        }
    };
    let pubargs = PubArgs {
        pub_url: a
            .pub_url
            .clone()
            .unwrap_or_else(|| format!("{http}://{host}/pub/{{ch}}")),
        size: a.size,
        payload: a.payload,
        payload_seed: a.payload_seed,
        pub_conns: 1,
        drain: a.drain,
        settle: 0.3,
    };
    let mut runs: Vec<(Kind, Option<f64>)> = Vec::new();
    for k in &a.transports {
        if *k == Kind::Shortpoll {
            for i in &a.shortpoll_intervals {
                runs.push((*k, Some(*i)));
            }
        } else {
            runs.push((*k, None));
        }
    }
    let mut rows = Vec::new();
    let mut cdfs = Vec::new();
    let mut table = String::from(
        "| transport | subscribers | p50 ms | p99 ms | max ms | lost | dup | server CPU-s / 1k deliveries | bytes / delivery | HTTP req/s | server memory / client |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut metrics = BTreeMap::new();
    for (kind, interval) in runs {
        let name = match interval {
            Some(i) => format!("shortpoll@{i}s"),
            None => kind.name().to_string(),
        };
        if let Some(i) = interval {
            ctx.common.poll_interval = i;
        }
        let cfg = match ctx.plan(kind, &url_for(kind), a.subs, a.channels, None, false) {
            Ok(c) => c,
            Err(e) => return Err(format!("{name}: {e}")),
        };
        // The row says whether WebSocket ran with permessage-deflate offered.
        let name = if cfg.deflate {
            format!("{name}+deflate")
        } else {
            name
        };
        let before = ctx.sample(0);
        let mut fleet = Fleet::start(cfg.clone())?;
        let ramp = match ctx.ramp(&fleet, &cfg) {
            Ok(r) => r,
            Err(e) => {
                fleet.stop();
                ctx.say(&format!("{name}: skipped: {e}"));
                rows.push(json!({"transport": name, "skipped": true, "error": e}));
                table.push_str(&format!(
                    "| {name} | 0 | – | – | – | – | – | – | – | – | – (not available: {e}) |\n"
                ));
                continue;
            }
        };
        let up = fleet.totals();
        if up.open == 0 {
            let errs = fleet.collect().map(|c| c.errors).unwrap_or_default();
            fleet.stop();
            ctx.say(&format!(
                "{name}: no subscriber connected ({errs:?}); skipped"
            ));
            rows.push(json!({"transport": name, "skipped": true, "errors": errs}));
            table.push_str(&format!(
                "| {name} | 0 | – | – | – | – | – | – | – | – | – (not available: {errs:?}) |\n"
            ));
            continue;
        }
        std::thread::sleep(Duration::from_secs_f64(pubargs.settle));
        let mut p = pubargs.clone();
        if let Some(i) = interval {
            p.drain = p.drain.max(i * 2.0 + 1.0);
        }
        let m = ctx.measure(&fleet, a.channels, &p, a.msgs, a.rate, &name)?;
        let (mem, _) = memory_json(&before, &m.before, up.open);
        fleet.stop();
        std::thread::sleep(Duration::from_secs(1));
        let (mut j, _) = measured_json(&m, a.subs);
        let lat = m.collected.latency.summary();
        let c = m.collected.counts;
        let delivered = (c.received - c.duplicates).max(1) as f64;
        let cpu1k = m.cpu.server_cpu_s.map(|s| s / delivered * 1000.0);
        let mem_per = mem["server_rss_per_conn_bytes"].as_f64();
        let kernel_per = mem["kernel_slab_per_conn_bytes"].as_f64().unwrap_or(0.0);
        table.push_str(&format!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.0} | {:.1} | {} |\n",
            group(up.open),
            lat.p50_ms,
            lat.p99_ms,
            lat.max_ms,
            group(c.lost),
            group(c.duplicates),
            cpu1k
                .map(|x| format!("{x:.4}"))
                .unwrap_or_else(|| "?".into()),
            m.delta.bytes_in as f64 / delivered,
            m.delta.requests as f64 / m.duration_s.max(1e-9),
            match mem_per {
                Some(x) => format!("{x:.0} B RSS + {kernel_per:.0} B kernel (both ends)"),
                None => format!("? RSS + {kernel_per:.0} B kernel (both ends)"),
            }
        ));
        if let Some(o) = j.as_object_mut() {
            o.insert("transport".into(), json!(name));
            o.insert("connected".into(), json!(up.connected));
            o.insert("failed".into(), json!(up.failed));
            o.insert("ramp_s".into(), json!(ramp.elapsed_s));
            o.insert("memory".into(), mem);
        }
        metrics.insert(format!("{name}_p99"), lat.p99_ms);
        metrics.insert(format!("{name}_lost"), c.lost as f64);
        *metrics.entry("lost".into()).or_insert(0.0) += c.lost as f64;
        *metrics.entry("duplicates".into()).or_insert(0.0) += c.duplicates as f64;
        rows.push(j);
        cdfs.push((name.clone(), m.collected.latency.cdf()));
    }
    ctx.done();
    let json = json!({
        "scenario": "compare",
        "subs": a.subs,
        "channels": a.channels,
        "msgs": a.msgs,
        "rate": a.rate,
        "payload": a.payload,
        "deflate": a.common.deflate,
        "tls": ctx.tls.as_ref().map(|c| c.mode),
        "transports": rows,
        "table_markdown": table,
        "warnings": ctx.warnings,
    });
    let human = format!(
        "compare: {} subscribers on {} channel(s), {} msgs at {}/s per transport ({}){}\n\n{table}",
        group(a.subs),
        a.channels,
        group(a.msgs),
        a.rate,
        a.payload.describe(a.size),
        ctx.tls
            .as_ref()
            .map(|c| format!(", over {}", c.mode.describe()))
            .unwrap_or_default()
    );
    Ok(Outcome {
        scenario: "compare",
        json,
        human,
        metrics,
        plots: vec![Plot {
            file: "latency-cdf-per-transport".into(),
            title: "Delivery latency CDF per transport".into(),
            x_label: "latency (ms)".into(),
            y_label: "fraction".into(),
            series: cdfs,
            log_x: true,
        }],
        warnings: ctx.warnings.clone(),
    })
}
