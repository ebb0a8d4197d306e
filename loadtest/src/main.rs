//! `ringcast-load`: the capacity-planning harness. See `cli` for the
//! command line and `docs/capacity-planning.md` for how to use it.
//!
//! ```text
//! cli ─ scenario::{idle, fanout, throughput, churn, compare}
//!         ├─ client: io_uring engine on ringcast-uring (rings × direct descriptors)
//!         │    └─ transport::tls (wss://, https://: rustls, unbuffered)
//!         │         └─ transport::{ws, sse, poll}: sans-io client protocols
//!         ├─ publish: scheduled POSTs (intended send times), payload: what they carry
//!         ├─ tls: --ca / --insecure, --tls-resume, --tls-version
//!         ├─ stats: HDR histograms, exact delivery check
//!         ├─ sample: /proc of server and harness, /metrics
//!         └─ report: summary, --json, --fail-if, Markdown + SVG
//! ```
//!
//! Exit status: 0 success, 1 the harness failed (bad options, host cannot
//! provide the run, server unreachable), 3 a `--fail-if` threshold was
//! crossed.

#![forbid(unsafe_code)]

mod cli;
mod client;
mod host;
mod marker;
mod payload;
mod publish;
mod report;
mod sample;
mod scenario;
mod stats;
mod tls;
mod transport;
mod url;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Scenario};
use report::Threshold;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = marker::clock_origin();
    let (common, result) = match &cli.scenario {
        Scenario::Idle(a) => (&a.common, scenario::idle::run(a)),
        Scenario::Fanout(a) => (&a.common, scenario::fanout::run(a)),
        Scenario::Throughput(a) => (&a.common, scenario::throughput::run(a)),
        Scenario::Churn(a) => (&a.common, scenario::churn::run(a)),
        Scenario::Compare(a) => (&a.common, scenario::compare::run(a)),
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ringcast-load: {e}");
            return ExitCode::from(1);
        }
    };
    let mut crossed = Vec::new();
    for t in &common.fail_if {
        match Threshold::parse(t).and_then(|t| t.check(&outcome.metrics)) {
            Ok(Some(msg)) => crossed.push(msg),
            Ok(None) => {}
            Err(e) => {
                eprintln!("ringcast-load: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if common.json {
        let mut j = outcome.json.clone();
        if let Some(o) = j.as_object_mut() {
            o.insert("thresholds_crossed".into(), serde_json::json!(crossed));
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&j).unwrap_or_else(|_| "{}".into())
        );
    } else {
        print!("{}", outcome.human);
        for w in &outcome.warnings {
            println!("warning: {w}");
        }
        for c in &crossed {
            println!("FAIL: {c}");
        }
    }
    if let Some(dir) = &common.report {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        if let Err(e) = report::write_dir(dir, &outcome, &command) {
            eprintln!("ringcast-load: {e}");
            return ExitCode::from(1);
        }
        if !common.json {
            println!("report written to {}", dir.join("report.md").display());
        }
    }
    if crossed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}
