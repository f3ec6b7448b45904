//! The loop's side of `GET /metrics` and `GET /stats` ([`Config::metrics`](crate::Config::metrics), cargo feature
//! `metrics`): the two pages, and the stats page's socket, to which the loop pushes the figures once a second.
//!
//! A stats socket is a connection the loop keeps for itself: handshaked, but not a user. The handler never hears of
//! it (no `accept`, `add`, `send` or `close`), it does not count against `max_users`, a broadcast does not reach it,
//! and what it sends is ignored. At most [`MAX_VIEWERS`] per loop; one more is refused with 503.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::debug;

use super::Server;
use crate::connection::Chunk;
use crate::error::HandshakeError;
use crate::frame::{self, OpCode};
use crate::handshake::{self, HttpResponse, Request};
use crate::metrics::{p99, render, stats, Sum};

/// Stats sockets one loop keeps at most.
pub(crate) const MAX_VIEWERS: usize = 64;
/// How often the figures go to the stats sockets.
const PUSH_EVERY: Duration = Duration::from_secs(1);

impl Server {
    /// `GET /metrics` or `GET /stats` (the page), when the setting is on: the response. `None` for anything else.
    pub(super) fn metrics_page(&self, req: &Request<'_>) -> Option<HttpResponse> {
        if !self.config.metrics {
            return None;
        }
        match req.path() {
            "/metrics" => Some(HttpResponse::new(
                200,
                render::CONTENT_TYPE,
                render::render(self.bus.figures()),
            )),
            "/stats" => Some(HttpResponse::new(
                200,
                "text/html; charset=utf-8",
                stats::PAGE,
            )),
            _ => None,
        }
    }

    /// Whether a valid WebSocket request is for the stats socket.
    pub(super) fn is_stats_socket(&self, req: &Request<'_>) -> bool {
        self.config.metrics && req.path() == "/stats"
    }

    /// Completes the handshake of a stats socket: the 101, and the first figures right behind it.
    pub(super) fn add_viewer(&mut self, key: usize, ws_key: &str) -> Result<(), HandshakeError> {
        if self.viewers.len() >= MAX_VIEWERS || self.stopping_since.is_some() {
            return Err(HandshakeError::TooManyUsers);
        }
        let conn = &mut self.conns[key];
        conn.push_control(handshake::switching_protocols(ws_key, None, None));
        conn.is_handshaked = true;
        conn.is_viewer = true;
        debug!("{} watches the stats", conn.id);
        self.viewers.push(key);
        self.fig.handshakes.add(1);
        self.stats_due.get_or_insert(self.now);
        self.mark_dirty(key);
        Ok(())
    }

    /// A stats socket is gone, or closing.
    pub(super) fn forget_viewer(&mut self, key: usize) {
        self.viewers.retain(|&k| k != key);
        if self.viewers.is_empty() {
            self.stats_due = None;
        }
    }

    /// Once a second while anyone watches: the whole server's figures to this loop's stats sockets.
    pub(super) fn push_stats(&mut self) {
        if self.stats_due.is_none_or(|due| self.now < due) {
            return;
        }
        self.stats_due = Some(self.now + PUSH_EVERY);
        let sum = Sum::of(self.bus.figures().iter().map(|f| &**f));
        let p99 = p99(&self.last_turns, &sum.turns);
        self.last_turns = sum.turns;
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let json = stats::json(&sum, p99, time, self.bus.figures().len());
        let mut bytes = Vec::with_capacity(json.len() + 4);
        frame::encode(&mut bytes, true, OpCode::Text, json.as_bytes());
        let bytes = std::sync::Arc::new(bytes);
        for key in self.viewers.clone() {
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.is_open()) else {
                continue;
            };
            conn.push(Chunk::data(
                frame::Head::NONE,
                crate::connection::Bytes::Shared(bytes.clone()),
            ));
            self.fig.messages_out.add(1);
            self.mark_dirty(key);
        }
    }
}
