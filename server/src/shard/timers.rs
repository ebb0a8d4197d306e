//! Per-connection deadlines on the shard's timing wheel.
//!
//! A connection has one deadline (`Conn::deadline`, set through its
//! protocol's `Context::set_timer`) and at most one *live* wheel entry
//! (`Conn::scheduled`, the tick it is filed under). Moving a deadline later
//! files nothing new: when the old entry fires, it is re-filed at the new
//! deadline. Moving it earlier files a new entry; the old one, when it
//! fires, no longer matches `scheduled` and is skipped. So the wheel never
//! needs a removal, and a connection costs one entry however often its
//! deadline moves.

use crate::transport::Tick;

use super::conns::{ConnKey, Conns};
use super::wheel::{Entry, TimerWheel};

/// The shard's timers. See the module docs.
#[derive(Debug, Default)]
pub struct Timers {
    wheel: TimerWheel<ConnKey>,
    fired: Vec<Entry<ConnKey>>,
}

impl Timers {
    /// Sets (or with `None` clears) the deadline of `key`.
    pub fn set(&mut self, conns: &mut Conns, key: ConnKey, at: Option<Tick>) {
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        let Some(at) = at else {
            conn.deadline = 0;
            return;
        };
        let at = at.max(1);
        conn.deadline = at;
        if conn.scheduled == 0 || at < conn.scheduled {
            conn.scheduled = at;
            self.wheel.schedule(at, key);
        }
    }

    /// Advances to `now` and appends the connections whose deadline has
    /// come to `due` (their deadline is cleared).
    pub fn expire(&mut self, now: Tick, conns: &mut Conns, due: &mut Vec<ConnKey>) {
        if now <= self.wheel.now() {
            return;
        }
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.advance(now, &mut fired);
        for e in fired.drain(..) {
            let key = e.item;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if conn.scheduled != e.due {
                continue; // superseded by an earlier entry
            }
            conn.scheduled = 0;
            let deadline = conn.deadline;
            if deadline == 0 {
                continue;
            }
            if deadline > now {
                conn.scheduled = deadline;
                self.wheel.schedule(deadline, key);
                continue;
            }
            conn.deadline = 0;
            due.push(key);
        }
        self.fired = fired;
    }
}
