//! Where each connection comes from and goes to.
//!
//! One destination `ip:port` and one source IP give at most as many
//! connections as there are source ports; on loopback the kernel's own
//! choice is limited to `ip_local_port_range` (28,232 ports by default) and
//! gets slow near exhaustion. Two ways past that, both from the client side
//! (the server listens on one address):
//!
//! * **Source addresses** (`--source-ips`): every connection binds an
//!   explicit `127.0.0.x:port` before connecting, with ports chosen by the
//!   harness *outside* the ephemeral range. Ports inside it would, while
//!   bound and for a minute of TIME_WAIT after, be unavailable to every
//!   other program's outgoing connections on the host. Each source IP gives
//!   about 36,000 ports on a default host. Works whatever address the
//!   server listens on.
//! * **Destination addresses** (`--dest-ips`): when the server listens on
//!   `0.0.0.0`, every `127.0.0.x` reaches it; the kernel then reuses source
//!   ports across destinations. Keep under ~15,000 connections per
//!   destination so its port search stays cheap.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The addressing of a run.
#[derive(Debug, Clone)]
pub struct AddrPlan {
    /// Destination addresses, used round-robin.
    pub dst: Vec<SocketAddrV4>,
    /// Source IPs to bind; empty: let the kernel choose.
    pub src_ips: Vec<Ipv4Addr>,
    /// Ports usable for explicit binding, in order.
    pub ports: Vec<u16>,
}

/// How the user asked to spread addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spread {
    /// Choose automatically.
    Auto,
    /// None.
    Off,
    /// These addresses.
    List(Vec<Ipv4Addr>),
    /// This many consecutive addresses from a start.
    Count(u32),
}

impl Spread {
    /// Parses `auto`, `none`, a count, `A-B` or `A,B,C`.
    pub fn parse(s: &str) -> Result<Spread, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Spread::Auto);
        }
        if s.eq_ignore_ascii_case("none") || s == "0" {
            return Ok(Spread::Off);
        }
        if let Ok(n) = s.parse::<u32>() {
            return Ok(Spread::Count(n));
        }
        if let Some((a, b)) = s.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().map_err(|_| format!("bad address {a:?}"))?;
            let b: Ipv4Addr = b.trim().parse().map_err(|_| format!("bad address {b:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_535 {
                return Err(format!("bad address range {s:?}"));
            }
            return Ok(Spread::List((a..=b).map(Ipv4Addr::from).collect()));
        }
        s.split(',')
            .map(|a| {
                a.trim()
                    .parse::<Ipv4Addr>()
                    .map_err(|_| format!("bad address {a:?}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Spread::List)
    }
}

/// Ports outside the ephemeral range and not listening, from 1024 up.
pub fn bindable_ports(ephemeral: (u16, u16), listening: &BTreeSet<u16>) -> Vec<u16> {
    (1024..=u16::MAX)
        .filter(|p| (*p < ephemeral.0 || *p > ephemeral.1) && !listening.contains(p))
        .collect()
}

impl AddrPlan {
    /// Plans `conns` connections to `target`, or in turn to `nodes` when
    /// some are given (`--nodes`).
    pub fn new(
        target: SocketAddrV4,
        nodes: &[SocketAddrV4],
        conns: u64,
        source: &Spread,
        dest: &Spread,
        ephemeral: (u16, u16),
        listening: &BTreeSet<u16>,
    ) -> Result<AddrPlan, String> {
        let loopback = target.ip().is_loopback();
        let dst: Vec<SocketAddrV4> = match dest {
            Spread::Auto | Spread::Off if !nodes.is_empty() => nodes.to_vec(),
            _ if !nodes.is_empty() => {
                return Err("--nodes and --dest-ips spread connections two ways: give one".into())
            }
            Spread::Auto | Spread::Off => vec![target],
            Spread::Count(n) => {
                if !loopback {
                    return Err(
                        "--dest-ips N only works for loopback targets (every 127.x.y.z \
                                reaches a server listening on 0.0.0.0); give a list instead"
                            .into(),
                    );
                }
                let base = u32::from(*target.ip());
                (0..(*n).max(1))
                    .map(|i| SocketAddrV4::new(Ipv4Addr::from(base + i), target.port()))
                    .collect()
            }
            Spread::List(l) => l
                .iter()
                .map(|ip| SocketAddrV4::new(*ip, target.port()))
                .collect(),
        };
        let ports = bindable_ports(ephemeral, listening);
        let per_ip = ports.len() as u64;
        let src_ips: Vec<Ipv4Addr> = match source {
            Spread::Off => Vec::new(),
            Spread::List(l) => l.clone(),
            Spread::Count(n) => {
                if !loopback {
                    return Err(
                        "--source-ips N picks 127.0.0.2… and only works for loopback \
                                targets; give a list of this host's addresses instead"
                            .into(),
                    );
                }
                (0..*n).map(|i| Ipv4Addr::from(0x7f00_0002 + i)).collect()
            }
            Spread::Auto => {
                // The kernel's own choice suffices for small runs and when
                // destinations are spread.
                let per_dst = conns.div_ceil(dst.len() as u64);
                if per_dst <= 15_000 || !loopback {
                    Vec::new()
                } else {
                    // 10 % headroom per address.
                    let n = conns.div_ceil(per_ip * 9 / 10).max(1);
                    (0..n as u32)
                        .map(|i| Ipv4Addr::from(0x7f00_0002 + i))
                        .collect()
                }
            }
        };
        let plan = AddrPlan {
            dst,
            src_ips,
            ports,
        };
        plan.check(conns, ephemeral)?;
        Ok(plan)
    }

    fn check(&self, conns: u64, ephemeral: (u16, u16)) -> Result<(), String> {
        if self.src_ips.is_empty() {
            let eph = u64::from(ephemeral.1.saturating_sub(ephemeral.0)) + 1;
            let capacity = eph * self.dst.len() as u64;
            if conns > capacity {
                return Err(format!(
                    "{} connections need more source ports than the kernel can choose: \
                     ip_local_port_range gives {} per destination × {} destination(s) = {}. \
                     Spread over source addresses (--source-ips auto or N, binds 127.0.0.2… with \
                     ports outside the ephemeral range) or, when the server listens on 0.0.0.0, \
                     over destination addresses (--dest-ips N)",
                    crate::host::group(conns),
                    crate::host::group(eph),
                    self.dst.len(),
                    crate::host::group(capacity)
                ));
            }
        } else if conns > self.endpoints() {
            return Err(format!(
                "{} connections need more source endpoints than {} source IP(s) × {} bindable \
                 ports = {}; give more --source-ips",
                crate::host::group(conns),
                self.src_ips.len(),
                crate::host::group(self.ports.len() as u64),
                crate::host::group(self.endpoints())
            ));
        }
        Ok(())
    }

    /// Source endpoints available for explicit binding.
    pub fn endpoints(&self) -> u64 {
        self.src_ips.len() as u64 * self.ports.len() as u64
    }

    /// Source endpoint number `i` (wraps around).
    pub fn endpoint(&self, i: u64) -> Option<SocketAddrV4> {
        let n = self.endpoints();
        if n == 0 {
            return None;
        }
        let i = i % n;
        let per = self.ports.len() as u64;
        Some(SocketAddrV4::new(
            self.src_ips[(i / per) as usize],
            self.ports[(i % per) as usize],
        ))
    }

    /// Destination of connection `i`.
    pub fn destination(&self, i: u64) -> SocketAddrV4 {
        self.dst[(i % self.dst.len() as u64) as usize]
    }

    /// One line for the start-up plan.
    pub fn describe(&self) -> String {
        let dst = if self.dst.len() == 1 {
            self.dst[0].to_string()
        } else {
            format!(
                "{} destinations {}…{}",
                self.dst.len(),
                self.dst[0],
                self.dst[self.dst.len() - 1]
            )
        };
        if self.src_ips.is_empty() {
            format!("to {dst}, source ports chosen by the kernel")
        } else {
            format!(
                "to {dst}, bound to {} source IP(s) {}…{} × {} ports outside the ephemeral range",
                self.src_ips.len(),
                self.src_ips[0],
                self.src_ips[self.src_ips.len() - 1],
                crate::host::group(self.ports.len() as u64)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> SocketAddrV4 {
        "127.0.0.1:8080".parse().unwrap()
    }

    #[test]
    fn parses_spreads() {
        assert_eq!(Spread::parse("auto"), Ok(Spread::Auto));
        assert_eq!(Spread::parse("none"), Ok(Spread::Off));
        assert_eq!(Spread::parse("8"), Ok(Spread::Count(8)));
        assert_eq!(
            Spread::parse("127.0.0.2-127.0.0.4").unwrap(),
            Spread::List(vec![
                "127.0.0.2".parse().unwrap(),
                "127.0.0.3".parse().unwrap(),
                "127.0.0.4".parse().unwrap()
            ])
        );
        assert!(Spread::parse("127.0.0.9-127.0.0.2").is_err());
        assert!(Spread::parse("x").is_err());
    }

    #[test]
    fn ports_avoid_the_ephemeral_range_and_listeners() {
        let listening: BTreeSet<u16> = [8080, 2000].into();
        let p = bindable_ports((32768, 60999), &listening);
        assert!(p.iter().all(|p| !(32768..=60999).contains(p)));
        assert!(!p.contains(&8080) && !p.contains(&2000) && !p.contains(&80));
        assert_eq!(p.len(), (32767 - 1024 + 1) + (65535 - 61000 + 1) - 2);
    }

    #[test]
    fn auto_plans_source_ips_for_large_runs() {
        let l = BTreeSet::new();
        let small = AddrPlan::new(
            t(),
            &[],
            10_000,
            &Spread::Auto,
            &Spread::Off,
            (32768, 60999),
            &l,
        )
        .unwrap();
        assert!(small.src_ips.is_empty());
        let big = AddrPlan::new(
            t(),
            &[],
            200_000,
            &Spread::Auto,
            &Spread::Off,
            (32768, 60999),
            &l,
        )
        .unwrap();
        assert_eq!(big.src_ips.len(), 7);
        assert_eq!(big.src_ips[0], Ipv4Addr::new(127, 0, 0, 2));
        assert!(big.endpoints() >= 200_000);
        let e0 = big.endpoint(0).unwrap();
        let e1 = big.endpoint(big.ports.len() as u64).unwrap();
        assert_eq!(e0.port(), e1.port());
        assert_ne!(e0.ip(), e1.ip());
        // Refusals name the way out.
        let err = AddrPlan::new(
            t(),
            &[],
            200_000,
            &Spread::Off,
            &Spread::Off,
            (32768, 60999),
            &l,
        )
        .unwrap_err();
        assert!(err.contains("--source-ips"), "{err}");
        let err = AddrPlan::new(
            t(),
            &[],
            200_000,
            &Spread::Count(1),
            &Spread::Off,
            (32768, 60999),
            &l,
        )
        .unwrap_err();
        assert!(err.contains("more --source-ips"), "{err}");
        let d = AddrPlan::new(
            t(),
            &[],
            200_000,
            &Spread::Off,
            &Spread::Count(16),
            (32768, 60999),
            &l,
        )
        .unwrap();
        assert_eq!(d.destination(17).ip(), &Ipv4Addr::new(127, 0, 0, 2));
    }

    #[test]
    fn nodes_take_connections_in_turn() {
        let l = BTreeSet::new();
        let a: SocketAddrV4 = "127.0.0.1:8081".parse().unwrap();
        let b: SocketAddrV4 = "127.0.0.1:8082".parse().unwrap();
        let plan = AddrPlan::new(
            t(),
            &[a, b],
            1000,
            &Spread::Auto,
            &Spread::Off,
            (32768, 60999),
            &l,
        )
        .unwrap();
        assert_eq!(
            (
                plan.destination(0),
                plan.destination(1),
                plan.destination(2)
            ),
            (a, b, a)
        );
        // Each node takes its share of the kernel's ports.
        assert!(AddrPlan::new(
            t(),
            &[a, b],
            50_000,
            &Spread::Off,
            &Spread::Off,
            (32768, 60999),
            &l
        )
        .is_ok());
        let err = AddrPlan::new(
            t(),
            &[a, b],
            10,
            &Spread::Auto,
            &Spread::Count(2),
            (32768, 60999),
            &l,
        )
        .unwrap_err();
        assert!(err.contains("--nodes and --dest-ips"), "{err}");
    }
}
