//! `throughput`: one set of subscribers; the publish rate rises step by
//! step (× `--step`) until a step's p99 exceeds `--max-p99` or its loss
//! exceeds `--max-loss`. The answer is the highest sustainable step, in
//! deliveries per second.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::{measured_json, tls_human, tls_json, tls_metrics, Ctx};
use crate::cli::ThroughputArgs;
use crate::client::Fleet;
use crate::host::group;
use crate::report::{Outcome, Plot};

/// The most steps a run takes, whatever the rates.
const MAX_STEPS: usize = 30;

/// Runs the scenario.
pub fn run(a: &ThroughputArgs) -> Result<Outcome, String> {
    if a.step.is_nan()
        || a.step <= 1.0
        || a.start_rate.is_nan()
        || a.start_rate <= 0.0
        || a.max_rate < a.start_rate
    {
        return Err("need --start-rate > 0, --step > 1 and --max-rate ≥ --start-rate".into());
    }
    let mut ctx = Ctx::new(&a.common)?;
    let cfg = ctx.plan(a.transport, &a.sub_url, a.subs, a.channels, None, false)?;
    let mut fleet = Fleet::start(cfg.clone())?;
    let ramp = ctx.ramp(&fleet, &cfg)?;
    let up = fleet.totals();
    std::thread::sleep(Duration::from_secs_f64(a.publish.settle));
    let mut steps = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    let mut rate = a.start_rate;
    let mut cdfs = Vec::new();
    let mut stop_reason = "reached --max-rate".to_string();
    for i in 0..MAX_STEPS {
        if rate > a.max_rate * 1.000_001 {
            break;
        }
        let msgs = ((rate * a.step_time).ceil() as u64).max(1);
        let label = format!("step {} at {}/s", i + 1, group(rate as u64));
        let m = ctx.measure(&fleet, a.channels, &a.publish, msgs, rate, &label)?;
        let lat = m.collected.latency.summary();
        let c = m.collected.counts;
        let delivered = c.received - c.duplicates;
        let dps = delivered as f64 / m.duration_s.max(1e-9);
        let ok = lat.p99_ms <= a.max_p99
            && c.loss_ratio() <= a.max_loss
            && m.publish.ok == m.publish.sent;
        ctx.say(&format!(
            "{label}: p99 {:.2} ms, loss {:.4}%, {} deliveries/s → {}",
            lat.p99_ms,
            c.loss_ratio() * 100.0,
            group(dps as u64),
            if ok { "sustainable" } else { "over the limit" }
        ));
        let (mut j, _) = measured_json(&m, a.subs);
        if let Some(o) = j.as_object_mut() {
            o.insert("rate".into(), json!(rate));
            o.insert("sustainable".into(), json!(ok));
        }
        steps.push(j);
        cdfs.push((
            format!("{}/s", group(rate as u64)),
            m.collected.latency.cdf(),
        ));
        if !ok {
            stop_reason = format!(
                "step at {}/s crossed a limit (p99 {:.2} ms vs {} ms, loss {:.4}% vs {:.4}%)",
                group(rate as u64),
                lat.p99_ms,
                a.max_p99,
                c.loss_ratio() * 100.0,
                a.max_loss * 100.0
            );
            break;
        }
        best = Some((rate, dps));
        rate *= a.step;
    }
    let tls = fleet.tls;
    let collected = fleet.collect()?;
    fleet.stop();
    ctx.done();
    let (best_rate, best_dps) = best.unwrap_or((0.0, 0.0));
    let json = json!({
        "scenario": "throughput",
        "transport": a.transport,
        "subs": a.subs,
        "channels": a.channels,
        "connected": up.connected,
        "failed": up.failed,
        "ramp_s": ramp.elapsed_s,
        "max_p99_ms": a.max_p99,
        "max_loss": a.max_loss,
        "sustainable_publish_rate": best_rate,
        "sustainable_deliveries_per_s": best_dps,
        "stopped_because": stop_reason,
        "steps": steps,
        "tls": tls_json(
            tls.as_ref(),
            &up,
            Some((&up, ramp.elapsed_s)),
            &collected.handshake,
            &collected.errors,
        ),
        "warnings": ctx.warnings,
    });
    let human = format!(
        "throughput {} over {} subscribers on {} channel(s)\n  sustainable: {} msgs/s published = {} deliveries/s (p99 ≤ {} ms, loss ≤ {:.4}%)\n  stopped: {stop_reason}\n{}",
        a.transport.name(),
        group(up.open),
        a.channels,
        group(best_rate as u64),
        group(best_dps as u64),
        a.max_p99,
        a.max_loss * 100.0,
        tls_human(
            tls.as_ref(),
            &up,
            Some((&up, ramp.elapsed_s, "the ramp")),
            &collected.handshake
        ),
    );
    let mut metrics = BTreeMap::new();
    metrics.insert("sustainable_deliveries_per_s".into(), best_dps);
    metrics.insert("sustainable_publish_rate".into(), best_rate);
    metrics.insert("failed".into(), up.failed as f64);
    tls_metrics(
        &mut metrics,
        tls.as_ref(),
        &up,
        &collected.handshake,
        &collected.errors,
    );
    Ok(Outcome {
        scenario: "throughput",
        json,
        human,
        metrics,
        plots: vec![Plot {
            file: "latency-cdf-per-step".into(),
            title: "Delivery latency CDF per publish rate".into(),
            x_label: "latency (ms)".into(),
            y_label: "fraction".into(),
            series: cdfs,
            log_x: true,
        }],
        warnings: ctx.warnings.clone(),
    })
}
