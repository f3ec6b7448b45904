//! [`Remote`]: reaching the loop from any thread.
//!
//! In the PHP tutorial only the loop could write to a client, from inside a callback. A `Remote` is a cloneable,
//! thread-safe handle to the server: a command is framed on the calling thread, pushed into the inbox of the loop
//! that owns the connection (a publish into every loop's, in its place in the one order) and carried out there,
//! so sockets are still touched by their loop alone. The inbox is bounded (`Config::remote_queue`): a call is
//! refused with [`RemoteError::Full`] when the loop cannot keep up, and with [`RemoteError::Stopped`] once the
//! server stops; nothing is dropped without the caller knowing. Commands from one thread are carried out in the
//! order that thread issued them.

use std::sync::Arc;

use crate::bus::{Bus, Source};
use crate::close::CloseCode;
use crate::connection::ConnId;
use crate::error::RemoteError;
use crate::handler::{Action, Outgoing};

/// Sends to, publishes to, closes and stops a running server from any thread. `Clone + Send + Sync`.
///
/// ```no_run
/// use std::time::Duration;
/// use wsloop::{Config, Handler, Server};
///
/// struct Room;
/// impl Handler for Room {}
///
/// let server = Server::bind("127.0.0.1:9001", Config::default())?;
/// let remote = server.remote();
/// std::thread::spawn(move || loop {
///     std::thread::sleep(Duration::from_secs(1));
///     // The clock's tick for everyone; the loop stopped: this thread ends.
///     if remote.broadcast("tick").is_err() {
///         break;
///     }
/// });
/// server.run(Room)?;
/// # Ok::<(), wsloop::Error>(())
/// ```
#[derive(Clone)]
pub struct Remote {
    bus: Arc<Bus>,
}

impl Remote {
    pub(crate) fn new(bus: Arc<Bus>) -> Remote {
        Remote { bus }
    }

    /// Sends a message to one connection, on whichever loop owns it. A connection that is gone by the time the
    /// loop carries it out is skipped, as [`Handle::send`](crate::Handle::send) does.
    ///
    /// An owned `String` or `Vec<u8>` crosses to the loop as it is: from 1 KiB up it is never copied (see
    /// [`Outgoing`]); a shorter one, or a borrowed one, is framed here, on the calling thread.
    pub fn send<'m>(&self, id: ConnId, msg: impl Into<Outgoing<'m>>) -> Result<(), RemoteError> {
        self.bus
            .push(id.loop_index(), Action::send(id, msg), Source::Remote)
    }

    /// Publishes a message to the subscribers of `topic` on every loop, in its place in the one order.
    pub fn publish<'m>(
        &self,
        topic: &str,
        msg: impl Into<Outgoing<'m>>,
    ) -> Result<(), RemoteError> {
        self.publish_to(Some(topic), msg.into())
    }

    /// Sends a message to every handshaked connection on every loop, in its place in the one order.
    pub fn broadcast<'m>(&self, msg: impl Into<Outgoing<'m>>) -> Result<(), RemoteError> {
        self.publish_to(None, msg.into())
    }

    /// Starts the closing handshake of one connection with `code` and `reason`, as
    /// [`Handle::close`](crate::Handle::close) does.
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) -> Result<(), RemoteError> {
        let action = Action::Close(id, code, reason.to_string());
        self.bus.push(id.loop_index(), action, Source::Remote)
    }

    /// Stops the server: each loop carries out what it was sent before, sends close 1001 to every client, and
    /// returns from `run` (within `Config::close_timeout`). Returns at once; every later call says `Stopped`.
    pub fn stop(&self) {
        self.bus.stop();
    }

    fn publish_to(&self, topic: Option<&str>, msg: Outgoing<'_>) -> Result<(), RemoteError> {
        if self.bus.is_stopped() {
            return Err(RemoteError::Stopped);
        }
        if let Some(answer) = self.bus.relay_publish(topic, &msg) {
            return answer;
        }
        let action = Action::publish(topic, msg);
        self.bus.publish(std::iter::once(action), Source::Remote)
    }
}
