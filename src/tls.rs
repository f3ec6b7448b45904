//! wss://: TLS in the same loop (the `tls` cargo feature).
//!
//! A connection is a socket plus, with TLS, a rustls [`ServerConnection`]: a state machine that does no I/O of its
//! own. The loop hands it what the socket has (`read_tls`), it decrypts (`process_new_packets`), and the plaintext
//! it gives back goes to the same `upgrade` and `decode` as a plain connection's bytes. On the way out, what is
//! queued for the connection is encrypted (`writer`) and the records are written (`write_tls`) as far as the socket
//! takes them. Only `connection.rs` calls this module; the server's steps do not know which kind a connection is.
//!
//! Edge-triggered, as everything in the loop: [`Session::read`] goes on until the socket says `WouldBlock` (a read
//! per readiness event, as rustls' own mio example does, is enough only for a poll that reports a socket for as long
//! as it stays readable), and records the socket cannot take wait in the session, in order, for `WRITABLE`. The
//! session holds at most [`SEND_LIMIT`] bytes of records waiting: the rest of what is queued for a peer stays in
//! the connection's queue, where the slow-reader limit and the memory budget count it.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::debug;
use mio::net::TcpStream;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::error::{interrupted, would_block};

/// The most plaintext a session encrypts before its records are written: two full records, so that a 16 KiB
/// message and its frame header go out in one write. Whatever else is queued for the peer waits unencrypted in the
/// connection's queue, where the slow-reader limit and the memory budget count it, so a slow reader holds no more
/// here than a fast one.
pub(crate) const SEND_LIMIT: usize = 32 << 10;

/// How much ciphertext one socket read takes. rustls reads at most 4 KiB into its own buffer at a time; reading
/// this much at once, and handing it over piece by piece, costs one system call where there would be several.
const READ_SIZE: usize = 64 << 10;

thread_local! {
    /// A read buffer for [`Session::read`], kept by the loop's thread: a session holds one only while ciphertext
    /// it has read waits to be decrypted, normally not beyond the read that filled it.
    static SPARE_INPUT: RefCell<Option<Box<[u8]>>> = const { RefCell::new(None) };
}

/// The server's certificate and key: what makes the listener speak `wss://` ([`Config::tls`](crate::Config::tls)).
///
/// ```no_run
/// let tls = wsloop::Tls::from_pem_files("cert.pem", "key.pem")?;
/// let config = wsloop::Config::default().tls(Some(tls));
/// # Ok::<(), wsloop::TlsError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Tls {
    config: Arc<ServerConfig>,
}

impl Tls {
    /// Reads a certificate chain (the server's certificate first, then the intermediates) and its private key
    /// (PKCS#8, PKCS#1 or SEC1) from PEM files, and makes a configuration with rustls' safe defaults: TLS 1.3 and
    /// 1.2, no client certificates, `http/1.1` offered through ALPN.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Tls, TlsError> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let read = |path: &Path| {
            std::fs::read(path).map_err(|error| TlsError::File {
                path: path.to_path_buf(),
                error,
            })
        };
        let (certs, key) = (read(cert_path)?, read(key_path)?);
        Tls::from_pem_named(&certs, cert_path, &key, key_path)
    }

    /// As [`Tls::from_pem_files`], from PEM text already in memory.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Tls, TlsError> {
        Tls::from_pem_named(
            cert_chain,
            Path::new("(certificate chain)"),
            key,
            Path::new("(private key)"),
        )
    }

    fn from_pem_named(
        certs: &[u8],
        cert_path: &Path,
        key: &[u8],
        key_path: &Path,
    ) -> Result<Tls, TlsError> {
        let bad_pem = |path: &Path, error: pem::Error| TlsError::Pem {
            path: path.to_path_buf(),
            error,
        };
        let chain = CertificateDer::pem_slice_iter(certs)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad_pem(cert_path, e))?;
        if chain.is_empty() {
            return Err(TlsError::Missing {
                path: cert_path.to_path_buf(),
                what: "no CERTIFICATE block",
            });
        }
        let key = match PrivateKeyDer::from_pem_slice(key) {
            Ok(key) => key,
            Err(pem::Error::NoItemsFound) => {
                return Err(TlsError::Missing {
                    path: key_path.to_path_buf(),
                    what: "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block",
                })
            }
            Err(e) => return Err(bad_pem(key_path, e)),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rejected)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(TlsError::Rejected)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls::from_config(Arc::new(config)))
    }

    /// Uses a configuration made by the application (its own certificate resolver, client certificates, another
    /// crypto provider). A WebSocket is opened over HTTP/1.1: if the configuration offers ALPN protocols, it must
    /// offer `http/1.1`.
    pub fn from_config(config: Arc<ServerConfig>) -> Tls {
        Tls { config }
    }

    /// The rustls configuration every connection's session starts from.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

/// Why certificates or a key could not be used. Its message names the file and what is wrong with it.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    File {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        error: io::Error,
    },
    /// The file is not valid PEM.
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        error: pem::Error,
    },
    /// The file holds no certificate, or no private key.
    Missing {
        /// The file.
        path: PathBuf,
        /// What it lacks.
        what: &'static str,
    },
    /// rustls refused the certificate and key: the key does not match the certificate, or is of a kind it does
    /// not support.
    Rejected(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File { path, error } => {
                write!(f, "{}: cannot read it: {error}", path.display())
            }
            TlsError::Pem { path, error } => {
                write!(f, "{}: not valid PEM: {error}", path.display())
            }
            TlsError::Missing { path, what } => write!(f, "{}: {what} in it", path.display()),
            TlsError::Rejected(error) => {
                write!(f, "the certificate and key were refused: {error}")
            }
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::File { error, .. } => Some(error),
            TlsError::Rejected(error) => Some(error),
            _ => None,
        }
    }
}

/// Why a TLS session failed: carried in the `io::Error` a read returns, so the loop can tell a peer that does not
/// speak TLS (or not well enough) from a socket error.
#[derive(Debug)]
pub(crate) struct Failed(pub rustls::Error);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS failed: {}", self.0)
    }
}

impl std::error::Error for Failed {}

/// Whether `error` is a [`Failed`] TLS session, and if so, what rustls said.
pub(crate) fn failure(error: &io::Error) -> Option<&rustls::Error> {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<Failed>())
        .map(|failed| &failed.0)
}

/// One connection's TLS session.
pub(crate) struct Session {
    tls: ServerConnection,
    /// Ciphertext read from the socket and not yet handed to rustls (`input[input_at..input_end]`); `None` when
    /// there is none.
    input: Option<Box<[u8]>>,
    input_at: usize,
    input_end: usize,
    /// Our `close_notify` is queued: nothing more will be encrypted.
    is_notified: bool,
    /// The session failed (a fatal alert is queued or sent): no `close_notify` follows.
    is_failed: bool,
}

impl Session {
    pub fn new(tls: &Tls) -> Result<Session, rustls::Error> {
        let mut session = ServerConnection::new(tls.config.clone())?;
        session.set_buffer_limit(Some(SEND_LIMIT));
        Ok(Session {
            tls: session,
            input: None,
            input_at: 0,
            input_end: 0,
            is_notified: false,
            is_failed: false,
        })
    }

    /// Fills `buf` with plaintext, reading and decrypting what the socket has. Returns how much, and whether the
    /// socket may still hold more (false once a read came back short, or said `WouldBlock`: then a new edge will
    /// announce what comes next; true while ciphertext already read waits to be decrypted). `Ok((0, _))` is the
    /// end: the peer's `close_notify`, or its FIN without one (a truncation the WebSocket layer notices anyway: its
    /// closing handshake is missing too). A peer that does not speak TLS gets the alert rustls chose, if the socket
    /// takes it, and an error carrying [`Failed`].
    ///
    /// `to_the_end` says the peer's FIN has been reported: then a short read proves nothing (the FIN may be right
    /// behind it, and no new edge will announce it), and only `WouldBlock` or the end stops the reading.
    pub fn read(
        &mut self,
        stream: &TcpStream,
        buf: &mut [u8],
        to_the_end: bool,
    ) -> io::Result<(usize, bool)> {
        let mut filled = 0;
        let mut is_drained = false;
        loop {
            // First what the session has decrypted already.
            match self.tls.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok((filled, filled > 0)), // the peer's close_notify: seen by the next call
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok((filled, true));
                    }
                    continue;
                }
                Err(e) if would_block(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    if filled == 0 {
                        debug!("TLS peer closed the connection without close_notify");
                    }
                    return Ok((filled, false));
                }
                Err(e) => return Err(e),
            }
            // Then the next piece of ciphertext: what the last socket read left, else a new socket read.
            if self.input.is_none() {
                if is_drained {
                    return match filled {
                        0 => Err(io::ErrorKind::WouldBlock.into()),
                        _ => Ok((filled, false)),
                    };
                }
                match self.read_socket(stream) {
                    Ok(0) => {
                        // The peer's FIN: rustls learns of it, and its reader says next time round how it ended.
                        self.tls.read_tls(&mut io::empty())?;
                    }
                    Ok(n) => is_drained = n < READ_SIZE && !to_the_end,
                    Err(e) if would_block(&e) => {
                        is_drained = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some(input) = &self.input {
                let taken = self
                    .tls
                    .read_tls(&mut &input[self.input_at..self.input_end])?;
                if taken == 0 {
                    // rustls always has room for more (or says its buffer is full): never spin on no progress.
                    return Err(io::Error::other("the TLS session took no bytes"));
                }
                self.input_at += taken;
                if self.input_at == self.input_end {
                    self.give_back_input();
                }
            }
            if let Err(error) = self.tls.process_new_packets() {
                // rustls has queued the alert that fits (a plain HTTP request gets one too, for what it is worth).
                self.is_failed = true;
                self.give_back_input();
                let _ = self.flush(stream);
                return Err(io::Error::new(io::ErrorKind::InvalidData, Failed(error)));
            }
        }
    }

    /// Reads the socket once into a read buffer of this session's (the thread's spare one if it has it). Returns
    /// the bytes read; with none, the buffer goes back.
    fn read_socket(&mut self, stream: &TcpStream) -> io::Result<usize> {
        let mut input = SPARE_INPUT
            .try_with(|spare| spare.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0; READ_SIZE].into_boxed_slice());
        let read = loop {
            // mio's `Read for &TcpStream` goes through its `try_io`, as mio asks of I/O it does not do itself.
            match (&mut &*stream).read(&mut input) {
                Err(e) if interrupted(&e) => continue,
                other => break other,
            }
        };
        match read {
            Ok(n) if n > 0 => {
                (self.input, self.input_at, self.input_end) = (Some(input), 0, n);
                Ok(n)
            }
            other => {
                keep_spare(input);
                other
            }
        }
    }

    /// The read buffer is no longer needed: back to the thread's spare, or freed.
    fn give_back_input(&mut self) {
        if let Some(input) = self.input.take() {
            keep_spare(input);
        }
    }

    /// Encrypts what the session can take of `slices`, writing out the records already waiting if it has no room.
    /// Returns the plaintext bytes taken; `WouldBlock` only when none could be, because records are still waiting
    /// for the socket. The caller ends with [`Session::flush`].
    pub fn write_vectored(
        &mut self,
        stream: &TcpStream,
        slices: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        // Encrypted records gather in the session up to `SEND_LIMIT` and go out together when it is full (or, from
        // `flush`, when the queue is done).
        let taken = self.tls.writer().write_vectored(slices)?;
        if taken > 0 {
            return Ok(taken);
        }
        if !self.flush(stream)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.tls.writer().write_vectored(slices)
    }

    /// Records wait for the socket.
    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Writes waiting records until none are left (`Ok(true)`) or the socket is full (`Ok(false)`).
    pub fn flush(&mut self, stream: &TcpStream) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut Outgoing(stream)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues our `close_notify` (once; not after a failure) and writes out what is waiting. `Ok(true)` once all
    /// of it is written.
    pub fn close_notify(&mut self, stream: &TcpStream) -> io::Result<bool> {
        if !self.is_notified && !self.is_failed {
            self.tls.send_close_notify();
            self.is_notified = true;
        }
        self.flush(stream)
    }
}

/// Keeps `input` as the thread's spare read buffer, unless it has one.
fn keep_spare(input: Box<[u8]>) {
    let _ = SPARE_INPUT.try_with(|spare| {
        spare.borrow_mut().get_or_insert(input);
    });
}

/// The socket as rustls writes to it.
struct Outgoing<'a>(&'a TcpStream);

impl Write for Outgoing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&mut &*self.0).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&mut &*self.0).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
