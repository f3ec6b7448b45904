//! [`Loops`]: one loop per core, the PHP loop N times over.
//!
//! Each loop is a whole [`Server`]: its own `mio::Poll`, its own listener on the same port (`SO_REUSEPORT`, so the
//! kernel spreads new connections over them), its own slab and its own handler, on its own thread. Nothing is
//! shared on the per-message path of a connection; what loops share goes through the bus (`bus/mod.rs`): publishes and
//! broadcasts, which every loop delivers in one and the same order, sends and closes for another loop's
//! connection, the user count (`max_users` is a limit for the whole server) and connection ids, unique across loops.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread;

use crate::bus::Bus;
use crate::error::Error;
use crate::handler::Handler;
use crate::remote::Remote;
use crate::server::{open, resolve, Config, Server, StopOnExit};

/// N loops on one port, each on its own thread with its own handler.
///
/// ```no_run
/// use wsloop::{Config, ConnId, Handle, Handler, Loops, Message};
///
/// struct Room;
/// impl Handler for Room {
///     fn send(&mut self, ws: &mut Handle<'_>, _id: ConnId, msg: Message<'_>) {
///         ws.broadcast(msg); // reaches the clients of every loop, in one order
///     }
/// }
///
/// let loops = Loops::bind("127.0.0.1:9002", Config::default(), 4)?;
/// loops.run(|_loop_index| Room)?;
/// # Ok::<(), wsloop::Error>(())
/// ```
pub struct Loops {
    servers: Vec<Server>,
    bus: Arc<Bus>,
}

impl Loops {
    /// Binds `threads` loops (at least one) to `addr`. With one, this is [`Server::bind`]: no `SO_REUSEPORT`, and
    /// the loop runs on the calling thread.
    pub fn bind<A: ToSocketAddrs>(addr: A, config: Config, threads: usize) -> Result<Loops, Error> {
        let mut addr: SocketAddr = resolve(addr)?;
        let threads = threads.max(1);
        let reuse_port = threads > 1;
        let mut parts = Vec::with_capacity(threads);
        let mut wakers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (poll, listener, waker) = open(addr, config.backlog, reuse_port)?;
            // Port 0: the first listener's port is every other's.
            addr = listener.local_addr()?;
            parts.push((poll, listener));
            wakers.push(waker);
        }
        let bus = Arc::new(Bus::new(wakers, config.remote_queue));
        let servers = parts
            .into_iter()
            .enumerate()
            .map(|(i, (poll, listener))| {
                Server::new(poll, listener, config.clone(), bus.clone(), i, threads)
            })
            .collect();
        Ok(Loops { servers, bus })
    }

    /// The address every loop listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.servers[0].local_addr()
    }

    /// Joins this server to the other nodes that use the Redis at `config.url` (cargo feature `redis`): publishes
    /// and broadcasts go through Redis Streams, and every node delivers them in one order per topic. Checks that
    /// Redis answers: a bad URL or an unreachable Redis is an error here, before anything runs. Connection ids
    /// are then unique across nodes too.
    #[cfg(feature = "redis")]
    pub fn redis(self, config: crate::RedisConfig) -> Result<Loops, Error> {
        let relay =
            crate::bus::redis::RedisRelay::start(config, &self.bus).map_err(Error::Redis)?;
        // 20 bits of the node's id above 32 bits of serial: unique across nodes, and exact in a JavaScript number.
        let first_serial = (relay.node() & 0xf_ffff) << 32;
        self.bus.set_relay(Box::new(relay), first_serial);
        Ok(self)
    }

    /// How many loops there are.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Never true: there is at least one loop.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// A handle that reaches every loop from any thread (and stops them all).
    pub fn remote(&self) -> Remote {
        Remote::new(self.bus.clone())
    }

    /// Runs every loop until the server stops: loop 0 on the calling thread, the others on threads of their own,
    /// each with the handler `make(loop_index)` builds for it (on that loop's thread, so it need not be `Send`).
    /// If one loop fails (or a callback panics), the others stop too; the first error is returned.
    pub fn run<H, F>(self, make: F) -> Result<(), Error>
    where
        H: Handler,
        F: Fn(usize) -> H + Sync,
    {
        let make = &make;
        let mut servers = self.servers.into_iter();
        let first = servers.next().expect("bind makes at least one loop");
        thread::scope(|scope| {
            let others: Vec<_> = servers
                .enumerate()
                .map(|(i, server)| {
                    thread::Builder::new()
                        .name(format!("wsloop-{}", i + 1))
                        .spawn_scoped(scope, move || {
                            // Building the handler may panic too: the other loops stop then as well.
                            let _stop_all = StopOnExit(server.bus());
                            server.run(make(i + 1))
                        })
                })
                .collect::<Result<_, _>>()
                .inspect_err(|_| self.bus.stop())?;
            let mut result = {
                let _stop_all = StopOnExit(first.bus());
                first.run(make(0))
            };
            for other in others {
                let outcome = other
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                if result.is_ok() {
                    result = outcome;
                }
            }
            if let Some(relay) = self.bus.relay() {
                relay.finish();
            }
            result
        })
    }
}
