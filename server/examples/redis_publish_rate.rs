//! How many publishes a second one Redis takes through the publish script
//! (`cluster::script`), pipelined: `--inflight` publishes in flight on one
//! multiplexed connection, spread over `--channels` channels, with history
//! on. Prints the rate and, with `--redis-pid`, Redis's CPU per 1,000
//! publishes (from /proc).
//!
//! ```sh
//! redis-server --port 6390 --save '' --appendonly no &
//! cargo run --release -p ringcast --example redis_publish_rate -- \
//!     --url redis://127.0.0.1:6390/ --count 200000 --inflight 64 --redis-pid $!
//! ```

use std::time::{Duration, Instant};

use codec::ws::DataKind;
use futures_util::StreamExt;
use ringcast::cluster::script::PublishScript;
use ringcast::hub::{ChannelName, Epoch};
use ringcast::policy::HistoryLimits;

/// Options.
#[derive(Debug, clap::Parser)]
struct Args {
    /// The Redis to publish to.
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    url: String,
    /// Publishes in all.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Publishes in flight at once.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Channels they are spread over.
    #[arg(long, default_value_t = 100)]
    channels: usize,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// redis-server's process id, for its CPU time.
    #[arg(long)]
    redis_pid: Option<u32>,
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let pid = pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn main() {
    let Args {
        url,
        count,
        inflight,
        channels,
        size,
        redis_pid: pid,
    } = clap::Parser::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let con = client.get_multiplexed_async_connection().await.unwrap();
        let script = PublishScript::default();
        let names: Vec<ChannelName> = (0..channels).map(|i| ChannelName::new(&format!("bench:{i}")).unwrap()).collect();
        let history = HistoryLimits {
            max_messages: 128,
            max_age: Duration::from_secs(300),
            max_bytes: 0,
            inbox: None,
        };
        let payload = vec![b'x'; size];
        let epoch = Epoch::random();
        let ticks_before = cpu_ticks(pid);
        let start = Instant::now();
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let published = futures_util::stream::iter(0..count)
            .map(|i| {
                let mut con = con.clone();
                let (script, names, payload) = (&script, &names, &payload);
                async move {
                    let ch = &names[i % names.len()];
                    script.publish(&mut con, ch, DataKind::Text, payload, history, now_ms, epoch, false, None).await
                }
            })
            .buffer_unordered(inflight)
            .filter(|r| std::future::ready(r.is_ok()))
            .count()
            .await;
        let elapsed = start.elapsed();
        let rate = published as f64 / elapsed.as_secs_f64();
        println!(
            "{published} of {count} publishes in {:.2} s: {rate:.0}/s ({inflight} in flight, {channels} channels, {size} B, history 128)",
            elapsed.as_secs_f64()
        );
        if let (Some(before), Some(after)) = (ticks_before, cpu_ticks(pid)) {
            let hz = 100.0; // USER_HZ on Linux
            let cpu_ms = (after - before) as f64 * 1000.0 / hz;
            println!(
                "redis-server CPU: {cpu_ms:.0} ms, {:.1} ms per 1,000 publishes",
                cpu_ms / published as f64 * 1000.0
            );
        }
    });
}
