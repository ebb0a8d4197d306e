//! What the shard does with mail, from other shards or from itself: owner
//! work goes to `owner`, answers and replays to the connection they are
//! for, deliveries to the fan-out.

use crate::bus::Mail;

use super::conns::ConnKey;
use super::relay::{Held, Owner, Relay};
use super::{owner, Shard, MAIL_BATCH};

impl Shard {
    /// Takes mail from every other shard, and in a cluster from the Redis
    /// bridge (at most [`MAIL_BATCH`] per sender).
    pub(super) fn drain_mail(&mut self) -> bool {
        let mut any = false;
        for from in self.post.senders() {
            if from == self.id {
                continue;
            }
            for _ in 0..MAIL_BATCH {
                let Some(m) = self.post.recv(from) else {
                    break;
                };
                any = true;
                self.on_mail(m);
                self.drain_local();
            }
        }
        any
    }

    /// Handles the mail this shard sent itself, until none is left.
    pub(super) fn drain_local(&mut self) {
        while let Some(m) = self.post.next_local() {
            self.on_mail(m);
        }
    }

    /// In a cluster: the relay, and the owner state it works on.
    fn relay_and_owner(&mut self) -> Option<(&mut Relay, Owner<'_>)> {
        let relay = self.relay.as_mut()?;
        let owner = Owner {
            hub: &mut self.hub,
            post: &mut self.post,
            now: self.now,
            budget: self.shared.settings.max_outbound,
        };
        Some((relay, owner))
    }

    fn on_mail(&mut self, mail: Mail) {
        match mail {
            Mail::Deliver(msg) => self.post.fan_out(msg, true),
            Mail::Publish { reply, items } => owner::publish(
                &mut self.hub,
                &mut self.post,
                &self.metrics,
                self.now,
                reply,
                items,
                self.durable.as_mut(),
            ),
            Mail::Subscribe {
                from,
                conn,
                at,
                channel,
                since,
                member,
                durable,
            } if self.relay.is_some() => {
                // In a cluster Redis keeps the cursors (`relay`).
                let request = Held {
                    from,
                    conn,
                    at,
                    since,
                    member,
                    durable: durable.map(|who| *who),
                    cursor: None,
                };
                let (relay, o) = self.relay_and_owner().expect("checked");
                relay.subscribe(o, request, channel);
            }
            Mail::Subscribe {
                from,
                conn,
                at,
                channel,
                since,
                member,
                durable,
            } => owner::subscribe(
                &mut self.hub,
                &mut self.post,
                self.now,
                self.shared.settings.max_outbound,
                from,
                conn,
                at,
                channel,
                since,
                member,
                durable.map(|who| *who).zip(self.durable.as_mut()),
            ),
            Mail::Ack {
                reply,
                channel,
                who,
                id,
                subscribed,
            } if self.relay.is_some() => {
                let relay = self.relay.as_ref().expect("checked");
                relay.ack(&mut self.post, reply, channel, who, id, subscribed);
            }
            Mail::Ack {
                reply,
                channel,
                who,
                id,
                subscribed: _,
            } => owner::ack(
                &mut self.hub,
                &mut self.post,
                reply,
                channel,
                who,
                id,
                self.durable.as_mut(),
            ),
            Mail::Receipt(receipt) => {
                owner::receipt(&mut self.hub, &mut self.post, self.now, *receipt)
            }
            Mail::UnreadQuery { reply, who } => match self.relay.as_ref() {
                // A cluster: Redis has the cursors. The asking connection's
                // shard has the bridge answer for it; the others have none.
                Some(relay) if reply.shard == self.post.me() => relay.unread(reply, who),
                Some(_) => {
                    let counts = Ok(Vec::new());
                    self.post.send(reply.shard, Mail::Unread { reply, counts });
                }
                None => {
                    let counts = Ok(self.hub.unread(&who));
                    self.post.send(reply.shard, Mail::Unread { reply, counts });
                }
            },
            Mail::Unread { reply, counts } => {
                let key = ConnKey::from_handle(reply.conn);
                self.dispatch(key, |p, ctx| p.handle_unread(ctx, reply.token, counts));
            }
            Mail::Acked {
                reply,
                channel,
                result,
            } => {
                let key = ConnKey::from_handle(reply.conn);
                self.dispatch(key, |p, ctx| {
                    p.handle_acked(ctx, reply.token, &channel, result)
                });
            }
            Mail::CatchUp { conn, at } => self.catch_up(conn, at),
            Mail::Unsubscribe { from, channel } => {
                if let Some(relay) = self.relay.as_mut() {
                    relay.unsubscribe(from, &channel);
                }
                self.hub.owner_unsubscribe(&channel, from);
            }
            Mail::Redis(what) => {
                if let Some((relay, o)) = self.relay_and_owner() {
                    relay.on_redis(o, what);
                }
            }
            Mail::PublishRefused { reply, reason } => {
                let key = ConnKey::from_handle(reply.conn);
                self.dispatch(key, |p, ctx| {
                    p.handle_publish_refused(ctx, reply.token, &reason)
                });
            }
            Mail::Left { channel, member } => match self.relay.as_mut() {
                Some(relay) => relay.left(&mut self.hub, &channel, &member),
                None => owner::left(&mut self.hub, &mut self.post, self.now, &channel, &member),
            },
            Mail::PresenceQuery { reply, channel } => match self.relay.as_ref() {
                Some(relay) => relay.presence(reply, channel),
                None => owner::presence(&self.hub, &mut self.post, reply, channel),
            },
            Mail::Durable { upto } => self.store_durable(upto),
            Mail::StoreFailed { after, reason } => self.store_failed(after, reason),
            Mail::Published { reply, ids } => {
                let key = ConnKey::from_handle(reply.conn);
                self.dispatch(key, |p, ctx| p.handle_published(ctx, reply.token, &ids));
            }
            Mail::Replayed { conn, at, replay } => {
                let key = ConnKey::from_handle(conn);
                self.dispatch(key, |p, ctx| p.handle_replay(ctx, at, *replay));
            }
            Mail::Presence {
                reply,
                channel,
                clients,
            } => {
                let key = ConnKey::from_handle(reply.conn);
                self.dispatch(key, |p, ctx| {
                    p.handle_presence(ctx, reply.token, &channel, &clients)
                });
            }
        }
    }
}
