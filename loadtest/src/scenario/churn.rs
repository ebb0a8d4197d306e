//! `churn`: while messages flow, subscribers are dropped at random and
//! reconnect resuming from the last id they received (`since` for
//! WebSocket and polling, `Last-Event-ID` for SSE). Every subscriber must
//! still receive every message exactly once: the delivery check spans its
//! reconnects.
//!
//! Over `wss://` and `https://` every reconnect is a TLS handshake —
//! resumed, with `--tls-resume on`, when the server handed out a ticket or
//! session — so churn also measures handshakes per second and the server
//! CPU they cost.

use std::time::Duration;

use serde_json::json;

use super::{measured_human, measured_json, Ctx};
use crate::cli::ChurnArgs;
use crate::client::Fleet;
use crate::host::group;
use crate::report::{Outcome, Plot};

/// Runs the scenario.
pub fn run(a: &ChurnArgs) -> Result<Outcome, String> {
    let mut ctx = Ctx::new(&a.common)?;
    let cfg = ctx.plan(a.transport, &a.sub_url, a.subs, a.channels, None, true)?;
    let mut fleet = Fleet::start(cfg.clone())?;
    let ramp = ctx.ramp(&fleet, &cfg)?;
    let up = fleet.totals();
    std::thread::sleep(Duration::from_secs_f64(a.publish.settle));
    let msgs = ((a.rate * a.duration).ceil() as u64).max(1);
    // Every subscriber needs a position to resume from before it is first
    // dropped: one primer message per channel, received by all, gives each
    // the id of its channel's latest message.
    let mut primer_args = a.publish.clone();
    primer_args.drain = primer_args.drain.max(5.0);
    let primer = ctx.measure(
        &fleet,
        a.channels,
        &primer_args,
        u64::from(a.channels),
        f64::from(a.channels) * 20.0,
        "priming resume positions",
    )?;
    if primer.collected.counts.lost > 0 {
        return Err(format!(
            "{} subscribers did not receive the primer message, so they could not resume;              check that the subscriber URL delivers message ids (ringcast WebSocket: ?format=json)",
            group(primer.collected.counts.lost)
        ));
    }
    let c = &primer.collected;
    if c.resumable < c.subscribers {
        return Err(format!(
            "{} of {} subscribers received no message id, so they could not resume after a \
             disconnect: the subscriber URL must deliver ids (ringcast WebSocket: add \
             ?format=json; SSE and polling carry them)",
            group(c.subscribers - c.resumable),
            group(c.subscribers)
        ));
    }
    fleet.churn(a.churn_rate);
    // Stop churning when publishing ends: the drain must not race a reconnect.
    let m = {
        let fleet_ref = &fleet;
        std::thread::scope(|s| {
            let stopper = s.spawn(move || {
                std::thread::sleep(Duration::from_secs_f64(a.duration + 0.05));
                fleet_ref.churn(0.0);
            });
            let r = ctx.measure(fleet_ref, a.channels, &a.publish, msgs, a.rate, "churn");
            let _ = stopper.join();
            r
        })?
    };
    fleet.stop();
    ctx.done();
    let (mut v, mut metrics) = measured_json(&m, a.subs);
    metrics.insert("reconnects".into(), m.delta.reconnects as f64);
    // Over TLS every reconnect is a handshake: their rate, and the server's
    // CPU per handshake (all of its CPU over the phase, deliveries
    // included: an upper bound, close when --rate is low).
    let handshakes = m.delta.tls_handshakes;
    let handshakes_per_s = handshakes as f64 / m.duration_s.max(1e-9);
    let cpu_per_handshake_ms = m
        .cpu
        .server_cpu_s
        .filter(|_| handshakes > 0)
        .map(|s| s * 1e3 / handshakes as f64);
    if m.tls.is_some() {
        metrics.insert("tls_handshakes_per_s".into(), handshakes_per_s);
    }
    metrics.insert("failed".into(), (up.failed + m.delta.failed) as f64);
    if m.delta.reconnects == 0 {
        ctx.warnings
            .push("no subscriber was churned: raise --churn-rate or --duration".into());
    }
    if let Some(o) = v.as_object_mut() {
        for (k, val) in [
            ("scenario", json!("churn")),
            ("transport", json!(a.transport)),
            ("subs", json!(a.subs)),
            ("channels", json!(a.channels)),
            ("rate", json!(a.rate)),
            ("churn_rate", json!(a.churn_rate)),
            ("connected", json!(up.connected)),
            ("failed", json!(up.failed + m.delta.failed)),
            ("reconnects", json!(m.delta.reconnects)),
            (
                "tls_handshakes_per_s",
                json!(m.tls.map(|_| handshakes_per_s)),
            ),
            (
                "server_cpu_ms_per_tls_handshake",
                json!(m.tls.and(cpu_per_handshake_ms)),
            ),
            ("ramp_s", json!(ramp.elapsed_s)),
            ("errors", json!(m.collected.errors)),
            ("warnings", json!(ctx.warnings)),
        ] {
            o.insert(k.into(), val);
        }
    }
    let human = format!(
        "churn {} over {} subscribers, {} msgs at {}/s, {} reconnects with resume ({} failed)\n{}{}",
        a.transport.name(),
        group(up.open),
        group(msgs),
        a.rate,
        group(m.delta.reconnects),
        group(m.delta.failed),
        measured_human(&m),
        match (m.tls, cpu_per_handshake_ms) {
            (Some(_), Some(ms)) => format!(
                "  tls handshakes: {handshakes_per_s:.0}/s; server CPU {ms:.3} ms per handshake \
                 (all its CPU over the phase, deliveries included)\n"
            ),
            _ => String::new(),
        }
    );
    Ok(Outcome {
        scenario: "churn",
        json: v,
        human,
        metrics,
        plots: vec![Plot {
            file: "latency-cdf".into(),
            title: "Delivery latency CDF across reconnects".into(),
            x_label: "latency (ms)".into(),
            y_label: "fraction".into(),
            series: vec![super::cdf_series(a.transport.name(), &m.collected)],
            log_x: true,
        }],
        warnings: ctx.warnings.clone(),
    })
}
