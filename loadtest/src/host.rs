//! What this host can give a run: file limits, local ports, memory, CPUs,
//! and the sockets already listening. Read from `/proc` and `getrlimit`
//! (through `ringcast_uring::sys`), so the harness can say before it
//! starts what a run needs and refuse early when the host cannot provide
//! it.

use std::collections::BTreeSet;

use ringcast_uring::sys;

/// Facts about this host relevant to opening many connections.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// Soft and hard `RLIMIT_NOFILE` (soft already raised to hard).
    pub nofile: (u64, u64),
    /// `net.ipv4.ip_local_port_range`.
    pub ephemeral: (u16, u16),
    /// `MemAvailable` in bytes.
    pub mem_available: u64,
    /// Online CPUs.
    pub cpus: usize,
    /// Local TCP ports in LISTEN state (IPv4 and IPv6).
    pub listening: BTreeSet<u16>,
    /// `net.ipv4.tcp_max_tw_buckets`.
    pub max_tw_buckets: Option<u64>,
}

impl HostFacts {
    /// Reads the facts, raising the soft file limit to the hard one.
    pub fn read() -> HostFacts {
        // If the soft limit cannot be raised, report it as it stands.
        let nofile = sys::raise_nofile_to_hard()
            .or_else(|_| sys::nofile_limit())
            .unwrap_or((1024, 1024));
        HostFacts {
            nofile,
            ephemeral: read_port_range().unwrap_or((32768, 60999)),
            mem_available: meminfo()
                .iter()
                .find(|(k, _)| k == "MemAvailable")
                .map_or(0, |(_, v)| *v),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            listening: listening_ports(),
            max_tw_buckets: std::fs::read_to_string("/proc/sys/net/ipv4/tcp_max_tw_buckets")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        }
    }
}

fn read_port_range() -> Option<(u16, u16)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|p| p.parse::<u16>());
    Some((it.next()?.ok()?, it.next()?.ok()?))
}

/// `/proc/meminfo` as `(name, bytes)` pairs.
pub fn meminfo() -> Vec<(String, u64)> {
    let Ok(s) = std::fs::read_to_string("/proc/meminfo") else {
        return Vec::new();
    };
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let mut parts = v.split_whitespace();
            let n: u64 = parts.next()?.parse().ok()?;
            let mult = if parts.next() == Some("kB") { 1024 } else { 1 };
            Some((k.to_string(), n * mult))
        })
        .collect()
}

/// Local ports of listening TCP sockets.
pub fn listening_ports() -> BTreeSet<u16> {
    let mut out = BTreeSet::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(s) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in s.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 3 && cols[3] == "0A" {
                if let Some(port) = cols[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                {
                    out.insert(port);
                }
            }
        }
    }
    out
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in human units (`1.5 GiB`).
pub fn bytes(n: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_host() {
        let h = HostFacts::read();
        assert!(h.nofile.0 >= 1 && h.nofile.0 <= h.nofile.1);
        assert!(h.ephemeral.0 <= h.ephemeral.1);
        assert!(h.cpus >= 1);
        assert!(h.mem_available > 0);
    }

    #[test]
    fn formatting() {
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(12), "12");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }
}
