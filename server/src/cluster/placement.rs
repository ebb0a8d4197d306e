//! Which Redis holds a channel, when there are several (`--redis
//! URL1,URL2,…`): rendezvous hashing.
//!
//! Every node ranks the servers for a channel by a hash of (server,
//! channel) and takes the highest. All nodes given the same list agree,
//! with no coordination; the channel's keys and its Pub/Sub topic live on
//! that one server, so a publish stays one script on one Redis.
//!
//! When the list changes, a channel moves only if the server it was on
//! left, or a new server outranks it: adding one of n+1 servers moves about
//! 1/(n+1) of the channels (all to the new one), removing one moves only
//! its own. A channel that moves starts on its new server without history
//! — a new epoch — so its clients resuming with old ids are told `reset`
//! (reason `epoch`), never given a silent gap. Every node must run with
//! the same list (in any order: a server is named by its URL).

/// The servers channels are placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    servers: Vec<String>,
}

impl Placement {
    /// Placement over `servers` (their URLs); `Err` for an empty list or a
    /// server named twice.
    pub fn new(servers: &[String]) -> Result<Placement, String> {
        if servers.is_empty() {
            return Err("--redis needs at least one URL".into());
        }
        let mut sorted = servers.to_vec();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("--redis names {} twice", w[0]));
        }
        Ok(Placement {
            servers: servers.to_vec(),
        })
    }

    /// The servers, as given.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The index (into [`Placement::servers`]) of the server that holds
    /// `channel`.
    pub fn server_of(&self, channel: &str) -> usize {
        (0..self.servers.len())
            .max_by_key(|&i| (score(&self.servers[i], channel), &self.servers[i]))
            .expect("at least one server")
    }
}

/// A server's rank for a channel: FNV-1a over both names, then a 64-bit
/// finaliser (splitmix64) so that similar names spread. Stable across
/// builds and platforms, unlike `std`'s hasher.
fn score(server: &str, channel: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in server.bytes().chain([0xff]).chain(channel.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("redis://10.0.0.{i}:6379/"))
            .collect()
    }

    fn channels() -> Vec<String> {
        (0..20_000).map(|i| format!("chat:room-{i}")).collect()
    }

    #[test]
    fn channels_spread_evenly_and_every_node_agrees() {
        let p = Placement::new(&servers(4)).unwrap();
        let mut counts = [0usize; 4];
        for c in channels() {
            counts[p.server_of(&c)] += 1;
        }
        for n in counts {
            assert!((4_500..=5_500).contains(&n), "{counts:?}");
        }
        // The order the list is given in does not matter.
        let mut reversed = servers(4);
        reversed.reverse();
        let q = Placement::new(&reversed).unwrap();
        for c in channels().iter().take(1000) {
            assert_eq!(p.servers()[p.server_of(c)], q.servers()[q.server_of(c)]);
        }
    }

    #[test]
    fn a_change_of_list_moves_only_what_it_must() {
        let four = Placement::new(&servers(4)).unwrap();
        let five = Placement::new(&servers(5)).unwrap();
        let mut moved = 0;
        for c in channels() {
            let (before, after) = (four.server_of(&c), five.server_of(&c));
            if before != after {
                moved += 1;
                assert_eq!(after, 4, "a channel only moves to the new server");
            }
        }
        assert!(
            (3_400..=4_600).contains(&moved),
            "about a fifth moved: {moved}"
        );
        // Removing server 2: only its channels move.
        let mut without: Vec<String> = servers(4);
        without.remove(2);
        let three = Placement::new(&without).unwrap();
        for c in channels() {
            let before = &four.servers()[four.server_of(&c)];
            let after = &three.servers()[three.server_of(&c)];
            if before != &servers(4)[2] {
                assert_eq!(before, after, "{c} moved though its server stayed");
            }
        }
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(Placement::new(&[]).unwrap_err().contains("at least one"));
        let twice = vec!["redis://a/".to_string(), "redis://a/".to_string()];
        assert!(Placement::new(&twice).unwrap_err().contains("twice"));
        assert_eq!(Placement::new(&servers(1)).unwrap().server_of("x"), 0);
    }
}
