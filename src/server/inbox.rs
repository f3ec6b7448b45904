//! The loop's inbox: what other threads (through a [`Remote`](crate::Remote)) and other loops ask of this loop, and
//! this loop's own publishes on their way round the bus.
//!
//! The PHP tutorial had nothing of this: only the loop itself could write to a socket. Here a command from outside
//! waits in the loop's inbox (`bus/mod.rs`) and the loop carries it out on its own thread when its waker fires, exactly
//! as it carries out what a callback asked for. So sockets are still touched by one thread only.

use std::mem;

use log::debug;

use super::Server;
use crate::bus::Source;
use crate::close::{ClosedBy, End};
use crate::connection::{Bytes, Closing};
use crate::frame::{Head, OpCode};
use crate::handler::{Action, Handler};
use crate::message::Message;

impl Server {
    /// The waker fired: carry out what waits in the inbox, then, if a stop was asked for, begin it.
    pub(super) fn on_wake<H: Handler>(&mut self, handler: &mut H) {
        if self.take_inbox(handler) {
            self.begin_stop(handler);
        }
    }

    /// Carries out every command waiting in the inbox, in the order they came. Returns true if the server stops.
    fn take_inbox<H: Handler>(&mut self, handler: &mut H) -> bool {
        let mut inbox = mem::take(&mut self.inbox);
        let is_stopping = self.bus.take(self.loop_index, &mut inbox);
        for action in inbox.drain(..) {
            self.carry_out(handler, action, true);
        }
        self.inbox = inbox;
        self.apply_actions(handler);
        is_stopping
    }

    /// The end of a turn: this turn's publishes go round the bus and are delivered here in their place in the one
    /// order, then everything queued is written. Callbacks run from there (a `close` that publishes a "leave") may
    /// publish more: the same loop takes those too, so nothing waits for the next turn.
    pub(super) fn settle<H: Handler>(&mut self, handler: &mut H) {
        loop {
            if !self.outbox.is_empty() {
                let mut outbox = mem::take(&mut self.outbox);
                let from = Source::Loop(self.loop_index);
                // From a loop the bus refuses nothing.
                let _ = self.bus.publish(outbox.drain(..), from);
                self.outbox = outbox;
                if self.take_inbox(handler) {
                    self.begin_stop(handler);
                }
            }
            self.flush_dirty(handler);
            if self.outbox.is_empty() {
                break;
            }
        }
    }

    /// Carries out one action: from a callback of this loop (`from_bus` false) or taken from the inbox.
    ///
    /// Alone, a loop delivers a publish at once. With other loops, a publish goes round the bus first, and so does
    /// whatever a callback asks for after it until the turn ends, so that this loop's own actions keep their order.
    pub(super) fn carry_out<H: Handler>(
        &mut self,
        handler: &mut H,
        action: Action,
        from_bus: bool,
    ) {
        if !from_bus && !self.bus.is_direct() {
            let is_publish = matches!(action, Action::Publish(..));
            if is_publish || !self.outbox.is_empty() {
                self.outbox.push(action);
                return;
            }
        }
        match action {
            Action::Publish(topic, head, bytes) => {
                match &topic {
                    None => self.broadcast(head, &bytes),
                    Some(topic) => self.publish_here(topic, head, &bytes),
                }
                if let Some(msg) = message_of(&head, &bytes) {
                    handler.published(topic.as_deref(), msg);
                }
            }
            Action::Replay(topic, opcode, payload) => {
                if let Some(msg) = message(opcode, &payload) {
                    handler.published(topic.as_deref(), msg);
                }
            }
            Action::Departed(presence) => {
                handler.departed(&mut self.handle(), &presence);
                self.apply_actions(handler);
            }
            Action::Send(id, ..) | Action::Close(id, ..) if id.loop_index() != self.loop_index => {
                // A connection of another loop: that loop carries it out (from a loop, the bus refuses nothing).
                let to = id.loop_index();
                let _ = self.bus.push(to, action, Source::Loop(self.loop_index));
            }
            Action::Send(id, head, bytes) => {
                if let Some(key) = self.open_key(id) {
                    super::trace_frame(id, ">", super::outbound::first(&head, &bytes));
                    let chunk = self.chunk_for(key, head, Bytes::Owned(bytes));
                    self.queue_data(key, chunk);
                }
            }
            Action::Close(id, code, reason) => {
                if let Some(key) = self.open_key(id) {
                    debug!("{id} closed by the application with {code}");
                    let end = End {
                        by: ClosedBy::Application,
                        code: Some(code.get()),
                        reason: &reason,
                    };
                    self.close_with(handler, key, Closing::Sent, end);
                }
            }
        }
    }
}

/// The message a queued frame carries: after its separate header, or inside the bytes when they are the whole frame.
fn message_of<'a>(head: &Head, bytes: &'a [u8]) -> Option<Message<'a>> {
    let (opcode, payload) = super::deflate::frame_parts(head, bytes)?;
    message(opcode, payload)
}

fn message(opcode: OpCode, payload: &[u8]) -> Option<Message<'_>> {
    match opcode {
        OpCode::Text => std::str::from_utf8(payload).ok().map(Message::Text),
        OpCode::Binary => Some(Message::Binary(payload)),
        _ => None,
    }
}
