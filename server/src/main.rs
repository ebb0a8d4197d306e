//! `ringcast`, the node binary: parses the configuration, sets up logging
//! and runs the node (see the library's docs for everything else).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use ringcast::{config, node};

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
    if let Err(e) = settings.publishing() {
        eprintln!("ringcast: configuration error: {e}");
        return ExitCode::from(2);
    }
    let mut filter = tracing_subscriber::EnvFilter::try_new(&settings.log).unwrap_or_else(|e| {
        eprintln!(
            "ringcast: invalid --log filter {:?} ({e}); using info",
            settings.log
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    // The store's engine logs every table it opens or writes at info and
    // debug; ringcast logs what matters of it (`store: …`). A filter that
    // names the engine's crates decides for itself.
    for quiet in ["fjall=warn", "lsm_tree=warn"] {
        let krate = quiet.split('=').next().unwrap_or_default();
        if !settings.log.contains(krate) {
            if let Ok(d) = quiet.parse() {
                filter = filter.add_directive(d);
            }
        }
    }
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
