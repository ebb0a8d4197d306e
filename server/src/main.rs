//! `ringcast`: the edge push server binary.
//!
//! ```text
//! main ─ config ─ node ──spawns──▶ shard threads (one per core)
//!                                   ├─ runtime: rings, buffers, timers
//!                                   ├─ hub: channels, ids, history
//!                                   └─ transport: http, ws, publish
//! ```
//! See docs/architecture.md for the data path.

mod capacity;
mod config;
mod hub;
mod metrics;
mod node;
mod runtime;
mod shard;
mod transport;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = config::Cli::parse();
    let settings = match config::Settings::resolve(cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringcast: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log).unwrap_or_else(|e| {
        eprintln!(
            "ringcast: invalid --log filter {:?} ({e}); using info",
            settings.log
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match node::run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcast: {e}");
            ExitCode::from(1)
        }
    }
}
