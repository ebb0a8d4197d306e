//! Graceful shutdown (SIGTERM, SIGINT): let every connection's protocol
//! end its way — WebSockets get 1001, held polls their `204`, event
//! streams and idle HTTP connections close, requests in progress finish —
//! and stop once everything is closed or `--drain-timeout` has passed
//! (then whatever is left is closed).
//!
//! The listeners keep accepting meanwhile, so that a new connection is
//! told why it cannot stay — `503` with `Connection: close` and
//! `Retry-After`, and `/healthz` answers `503 draining` so load balancers
//! move away — rather than waiting in a backlog nobody accepts from.
//! Accepting stops at the forced close.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Drain, Shard};

impl Shard {
    /// One step of shutdown; `true` once the shard may stop.
    pub(super) fn shutdown_step(&mut self) -> bool {
        let drain = match self.drain {
            Some(d) => d,
            None => {
                let d = Drain {
                    deadline: self.now + self.shared.settings.drain_timeout,
                    forced: false,
                };
                self.drain = Some(d);
                for key in self.conns.live_keys() {
                    self.dispatch(key, |p, ctx| p.handle_shutdown(ctx));
                    self.drain_local();
                }
                d
            }
        };
        if self.now >= drain.deadline && !drain.forced {
            // Past the drain timeout: drop whatever is still open, once.
            self.drain = Some(Drain {
                forced: true,
                ..drain
            });
            self.acceptor.stop(&mut self.conns);
            for key in self.conns.live_keys() {
                self.dispatch(key, |p, ctx| p.handle_close(ctx));
                self.drain_local();
            }
        }
        // `used` counts every slot until its close completes, so it is zero
        // only when nothing is open. The shards stop together once none has
        // a connection; after the forced close nothing is open either, and
        // kernel closes get one more second.
        let me = 1u64 << self.id;
        let busy = &self.shared.draining_shards;
        let others = if self.conns.used() == 0 {
            busy.fetch_and(!me, Ordering::SeqCst) & !me
        } else {
            busy.fetch_or(me, Ordering::SeqCst);
            me
        };
        others == 0
            || (self.drain.is_some_and(|d| d.forced)
                && self.now >= drain.deadline + Duration::from_secs(1))
    }
}
