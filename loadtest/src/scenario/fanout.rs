//! `fanout`: S subscribers on K channels, M messages at rate R; latency
//! from the intended send time and an exact delivery check.

use std::time::Duration;

use serde_json::json;

use super::idle::memory_json;
use super::{cdf_series, latency_json, latency_line, measured_human, measured_json, Ctx};
use crate::cli::FanoutArgs;
use crate::client::Fleet;
use crate::host::group;
use crate::report::{Outcome, Plot};

/// Runs the scenario.
pub fn run(a: &FanoutArgs) -> Result<Outcome, String> {
    if a.msgs == 0 {
        return Err("--msgs must be at least 1".into());
    }
    let mut ctx = Ctx::new(&a.common)?;
    let cfg = ctx.plan(a.transport, &a.sub_url, a.subs, a.channels, None, false)?;
    let before = ctx.sample(0);
    let mut fleet = Fleet::start(cfg.clone())?;
    let ramp = ctx.ramp(&fleet, &cfg)?;
    let up = fleet.totals();
    ctx.say(&format!(
        "{} subscribers live after {:.1} s ({} failed); publishing {} messages at {}/s",
        group(up.open),
        ramp.elapsed_s,
        group(up.failed),
        group(a.msgs),
        a.rate
    ));
    std::thread::sleep(Duration::from_secs_f64(a.publish.settle));
    let m = ctx.measure(&fleet, a.channels, &a.publish, a.msgs, a.rate, "fanout")?;
    let connect = m.collected.connect.summary();
    let (mem_json, mem_human) = memory_json(&before, &m.before, up.open);
    fleet.stop();
    ctx.done();
    if up.failed > 0 {
        ctx.warnings.push(format!(
            "{} of {} subscribers failed to connect and took no part: {:?}",
            group(up.failed),
            group(a.subs),
            m.collected.errors
        ));
    }
    let (mut v, mut metrics) = measured_json(&m, a.subs);
    metrics.insert("failed".into(), up.failed as f64);
    metrics.insert("connected".into(), up.connected as f64);
    let obj = v.as_object_mut().ok_or("internal: not an object")?;
    for (k, val) in [
        ("scenario", json!("fanout")),
        ("transport", json!(a.transport)),
        ("subs", json!(a.subs)),
        ("channels", json!(a.channels)),
        ("msgs", json!(a.msgs)),
        ("rate", json!(a.rate)),
        ("size", json!(a.publish.size)),
        ("payload", json!(a.publish.payload)),
        ("payload_seed", json!(a.publish.payload_seed)),
        ("connected", json!(up.connected)),
        ("failed", json!(up.failed)),
        ("connect_time", latency_json(&connect)),
        ("ramp_s", json!(ramp.elapsed_s)),
        ("errors", json!(m.collected.errors)),
        ("memory", mem_json),
        ("kernel_after", json!(m.after.kernel)),
        ("warnings", json!(ctx.warnings)),
    ] {
        obj.insert(k.into(), val);
    }
    let human = format!(
        "fanout {}{} over {} subscribers on {} channel(s), {} msgs at {}/s ({})\n  connected {} ({} failed) in {:.1} s; connect time {}\n{}{}",
        a.transport.name(),
        if cfg.deflate { " (permessage-deflate offered)" } else { "" },
        group(a.subs),
        a.channels,
        group(a.msgs),
        a.rate,
        a.publish.payload.describe(a.publish.size),
        group(up.connected),
        group(up.failed),
        ramp.elapsed_s,
        latency_line(&connect),
        measured_human(&m),
        mem_human
    );
    let plots = vec![
        Plot {
            file: "latency-cdf".into(),
            title: "Delivery latency CDF".into(),
            x_label: "latency (ms, from intended send)".into(),
            y_label: "fraction of deliveries".into(),
            series: vec![cdf_series(a.transport.name(), &m.collected)],
            log_x: true,
        },
        Plot {
            file: "p99-over-time".into(),
            title: "p99 latency over time".into(),
            x_label: "seconds".into(),
            y_label: "p99 (ms)".into(),
            series: vec![("p99".into(), m.p99_series.clone())],
            log_x: false,
        },
        Plot {
            file: "connect-rate".into(),
            title: "Connect rate over time".into(),
            x_label: "seconds".into(),
            y_label: "connections/s".into(),
            series: vec![("connect rate".into(), ramp.rate_series)],
            log_x: false,
        },
    ];
    Ok(Outcome {
        scenario: "fanout",
        json: v,
        human,
        metrics,
        plots,
        warnings: ctx.warnings.clone(),
    })
}
