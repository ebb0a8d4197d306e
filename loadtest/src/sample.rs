//! Resource sampling: the server process (`--server-pid`), its `/metrics`
//! (`--metrics-url`), this harness, and the kernel's socket memory.
//!
//! Kernel figures are host-wide: with client and server on one host, slab
//! growth covers *both ends* of every connection. They are reported as
//! such; the server's own share is its RSS plus roughly half the slab.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringcast_uring::sys::clock_ticks_per_second;
use serde::Serialize;

use crate::host::meminfo;
use crate::url::UrlTemplate;

/// CPU time and memory of one process.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ProcStat {
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn proc_stat(pid: &str) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime is field 14.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = clock_ticks_per_second();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let threads: u64 = f.get(17)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcStat {
        cpu_s: (utime + stime) / ticks,
        rss_bytes: rss_kb * 1024,
        threads,
    })
}

/// Busy and total CPU seconds of the whole host (`/proc/stat`).
pub fn host_cpu() -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let Some(line) = s.lines().next() else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    let t = clock_ticks_per_second();
    ((total - idle) / t, total / t)
}

/// Kernel memory and socket counts.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct KernelMem {
    /// `Slab` bytes.
    pub slab_bytes: u64,
    /// `SUnreclaim` bytes.
    pub sunreclaim_bytes: u64,
    /// `MemAvailable` bytes.
    pub mem_available_bytes: u64,
    /// TCP sockets in use (`/proc/net/sockstat`).
    pub tcp_inuse: u64,
    /// TCP sockets in TIME_WAIT.
    pub tcp_tw: u64,
    /// Pages of TCP buffer memory, as bytes.
    pub tcp_mem_bytes: u64,
}

/// Reads `/proc/meminfo` and `/proc/net/sockstat`.
pub fn kernel_mem() -> KernelMem {
    let mut k = KernelMem::default();
    for (name, v) in meminfo() {
        match name.as_str() {
            "Slab" => k.slab_bytes = v,
            "SUnreclaim" => k.sunreclaim_bytes = v,
            "MemAvailable" => k.mem_available_bytes = v,
            _ => {}
        }
    }
    if let Ok(s) = std::fs::read_to_string("/proc/net/sockstat") {
        for line in s.lines() {
            if let Some(rest) = line.strip_prefix("TCP:") {
                let f: Vec<&str> = rest.split_whitespace().collect();
                for pair in f.chunks(2) {
                    if let [k2, v] = pair {
                        let v: u64 = v.parse().unwrap_or(0);
                        match *k2 {
                            "inuse" => k.tcp_inuse = v,
                            "tw" => k.tcp_tw = v,
                            "mem" => k.tcp_mem_bytes = v * 4096,
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    k
}

/// Scrapes a Prometheus text endpoint and sums each metric over its labels.
pub fn scrape(url: &UrlTemplate) -> Result<BTreeMap<String, f64>, String> {
    let mut s = TcpStream::connect_timeout(&url.addr.into(), Duration::from_secs(2))
        .map_err(|e| format!("metrics: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        url.path, url.host
    )
    .map_err(|e| format!("metrics: {e}"))?;
    let mut body = Vec::new();
    s.take(16 << 20)
        .read_to_end(&mut body)
        .map_err(|e| format!("metrics: {e}"))?;
    let text = String::from_utf8_lossy(&body);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err("metrics: no response".into());
    };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "metrics: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(parse_prometheus(body))
}

/// Sums every sample of each metric name over its label sets.
pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name_labels, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let name = name_labels.split('{').next().unwrap_or_default().trim();
        if let Ok(v) = value.trim().parse::<f64>() {
            *out.entry(name.to_string()).or_insert(0.0) += v;
        }
    }
    out
}

/// One sample of everything.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Connections the harness had open.
    pub open: u64,
    /// The server process, if known.
    pub server: Option<ProcStat>,
    /// This harness.
    pub harness: ProcStat,
    /// Host busy CPU seconds (all CPUs).
    pub host_busy_cpu_s: f64,
    /// Host total CPU seconds (all CPUs).
    pub host_total_cpu_s: f64,
    /// Kernel memory.
    pub kernel: KernelMem,
    /// Selected server metrics (sums over labels).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// Takes samples.
#[derive(Debug, Clone, Default)]
pub struct Sampler {
    /// Server process ids.
    pub pids: Vec<i32>,
    /// `/metrics` URL.
    pub metrics_url: Option<UrlTemplate>,
}

impl Sampler {
    /// Samples now.
    pub fn sample(&self, t_s: f64, open: u64) -> Sample {
        let server = if self.pids.is_empty() {
            None
        } else {
            let mut total = ProcStat::default();
            let mut any = false;
            for p in &self.pids {
                if let Some(s) = proc_stat(&p.to_string()) {
                    any = true;
                    total.cpu_s += s.cpu_s;
                    total.rss_bytes += s.rss_bytes;
                    total.threads += s.threads;
                }
            }
            any.then_some(total)
        };
        let (busy, total) = host_cpu();
        let metrics = self
            .metrics_url
            .as_ref()
            .and_then(|u| scrape(u).ok())
            .map(|m| {
                m.into_iter()
                    .filter(|(k, _)| {
                        k.contains("connections")
                            || k.contains("deliveries")
                            || k.contains("resident_memory")
                            || k.contains("bytes_out")
                            || k.contains("published")
                    })
                    .collect()
            })
            .unwrap_or_default();
        Sample {
            t_s,
            open,
            server,
            harness: proc_stat("self").unwrap_or_default(),
            host_busy_cpu_s: busy,
            host_total_cpu_s: total,
            kernel: kernel_mem(),
            metrics,
        }
    }

    /// Checks that the server pid exists and the metrics URL answers.
    pub fn check(&self) -> Result<(), String> {
        for p in &self.pids {
            if proc_stat(&p.to_string()).is_none() {
                return Err(format!("--server-pid {p}: no such process"));
            }
        }
        if let Some(u) = &self.metrics_url {
            scrape(u).map_err(|e| format!("--metrics-url {u}: {e}"))?;
        }
        Ok(())
    }
}

/// CPU use between two samples.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CpuUse {
    /// Server CPU seconds.
    pub server_cpu_s: Option<f64>,
    /// Harness CPU seconds.
    pub harness_cpu_s: f64,
    /// Harness CPU as a share of one core over the interval (1.0 = one core busy).
    pub harness_cores: f64,
    /// Host busy share of all its CPUs (0..1).
    pub host_busy: f64,
}

/// CPU use from `a` to `b`.
pub fn cpu_between(a: &Sample, b: &Sample) -> CpuUse {
    let dt = (b.t_s - a.t_s).max(1e-9);
    let harness = b.harness.cpu_s - a.harness.cpu_s;
    let total = b.host_total_cpu_s - a.host_total_cpu_s;
    CpuUse {
        server_cpu_s: match (a.server, b.server) {
            (Some(x), Some(y)) => Some(y.cpu_s - x.cpu_s),
            _ => None,
        },
        harness_cpu_s: harness,
        harness_cores: harness / dt,
        host_busy: if total > 0.0 {
            (b.host_busy_cpu_s - a.host_busy_cpu_s) / total
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process_and_kernel() {
        let me = proc_stat("self").unwrap();
        assert!(me.rss_bytes > 0);
        assert!(me.threads >= 1);
        let k = kernel_mem();
        assert!(k.slab_bytes > 0 && k.mem_available_bytes > 0);
        let (busy, total) = host_cpu();
        assert!(total > 0.0 && busy <= total);
        let s = Sampler {
            pids: vec![std::process::id() as i32],
            metrics_url: None,
        };
        assert!(s.check().is_ok());
        let a = s.sample(0.0, 0);
        let b = s.sample(1.0, 0);
        assert!(a.server.is_some());
        let c = cpu_between(&a, &b);
        assert!(c.harness_cpu_s >= 0.0);
        assert!(Sampler {
            pids: vec![i32::MAX],
            metrics_url: None
        }
        .check()
        .is_err());
    }

    #[test]
    fn prometheus_sums_over_labels() {
        let m = parse_prometheus(
            "# HELP x y\nringcast_connections{shard=\"0\",transport=\"ws\"} 3\n\
             ringcast_connections{shard=\"1\",transport=\"ws\"} 4\nringcast_rings 2\n",
        );
        assert_eq!(m["ringcast_connections"], 7.0);
        assert_eq!(m["ringcast_rings"], 2.0);
    }
}
