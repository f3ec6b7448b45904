//! Command-line flags shared by the examples: `--host`, `--port`, `--max-users`, `--max-memory`, `--threads`,
//! `--deflate` (on in the chatroom, which takes `--no-deflate` instead), `--metrics` (`GET /metrics` and `GET /stats`;
//! on in the chatroom, which takes `--no-metrics` instead), `--tls-cert` and `--tls-key` (wss://) and,
//! for the chatroom, `--max-message` and `--redis`.

use std::process::exit;

/// The parsed flags.
pub struct Args {
    pub host: String,
    pub port: u16,
    pub max_users: usize,
    pub max_message: usize,
    /// `--max-memory BYTES`: the server's memory budget (`Config::max_memory`), shared among the loops.
    pub max_memory: usize,
    /// Loops, each on its own thread (`wsloop::Loops`); 1 runs the one loop on the main thread.
    pub threads: usize,
    /// The Redis that joins this node to others (`--redis redis://HOST:PORT`), if any.
    pub redis: Option<String>,
    /// `--redis-maxlen N`: entries each stream keeps, about (`RedisConfig::maxlen`).
    pub redis_maxlen: Option<usize>,
    /// `--redis-pending N`: publishes kept while Redis is away (`RedisConfig::pending`).
    pub redis_pending: Option<usize>,
    /// permessage-deflate with the default settings (`Config::deflate`).
    pub deflate: bool,
    /// `--deflate-dedicated KIB`: permessage-deflate with each side keeping its context, each connection with its
    /// own compressor of about KIB KiB (`Deflate::dedicated`; a publish is then compressed once per receiver): the
    /// memory and CPU that costs, for comparison.
    pub deflate_dedicated: Option<u32>,
    /// `--tls-cert FILE --tls-key FILE`: serve `wss://` (and the chatroom's page over https) with this certificate
    /// chain and private key, in PEM.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// `GET /metrics` and `GET /stats` (`Config::metrics`).
    pub metrics: bool,
}

impl Args {
    /// The permessage-deflate settings the flags ask for, if any.
    pub fn deflate(&self) -> Option<wsloop::deflate::Deflate> {
        match self.deflate_dedicated {
            Some(kib) => wsloop::deflate::Deflate::dedicated(kib),
            None => self.deflate.then(wsloop::deflate::Deflate::default),
        }
    }

    /// The certificate and key of `--tls-cert` and `--tls-key`, if given. A file that cannot be used ends the
    /// program with one line saying which and why, and exit status 1.
    pub fn tls(&self, name: &str) -> Option<wsloop::Tls> {
        let (cert, key) = (self.tls_cert.as_ref()?, self.tls_key.as_ref()?);
        match wsloop::Tls::from_pem_files(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("{name}: --tls-cert {cert} --tls-key {key}: {e}");
                exit(1)
            }
        }
    }

    /// "s" with TLS, to make `ws` / `wss` and `http` / `https`.
    pub fn s(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "s"
        } else {
            ""
        }
    }
}

impl Args {
    /// The defaults every example starts from.
    pub fn new(port: u16, max_users: usize, max_message: usize) -> Args {
        Args {
            host: "127.0.0.1".into(),
            port,
            max_users,
            max_message,
            max_memory: wsloop::Config::default().max_memory,
            threads: 1,
            redis: None,
            redis_maxlen: None,
            redis_pending: None,
            deflate: false,
            deflate_dedicated: None,
            tls_cert: None,
            tls_key: None,
            metrics: false,
        }
    }
}

/// Parses `std::env::args`; prints usage and exits with status 2 on an unknown flag or a bad value. `is_chatroom`
/// adds `--max-message` and `--redis`.
pub fn parse(name: &str, defaults: Args, is_chatroom: bool) -> Args {
    let usage = format!(
        "usage: cargo run --example {name} -- [--host ADDR] [--port N] [--max-users N] [--max-memory BYTES] \
         [--threads N] [--tls-cert FILE --tls-key FILE] {} {}{}\n\
         defaults: --host {} --port {} --max-users {} --max-memory {} --threads {}{}",
        if is_chatroom { "[--no-deflate]" } else { "[--deflate | --deflate-dedicated KIB]" },
        if is_chatroom { "[--no-metrics]" } else { "[--metrics]" },
        if is_chatroom {
            " [--max-message BYTES] [--redis redis://HOST:PORT [--redis-maxlen N] [--redis-pending N]]"
        } else {
            ""
        },
        defaults.host,
        defaults.port,
        defaults.max_users,
        defaults.max_memory,
        defaults.threads,
        if is_chatroom {
            format!(" --max-message {} (no Redis)", defaults.max_message)
        } else {
            String::new()
        },
    );
    let fail = |why: String| -> ! {
        eprintln!("{name}: {why}\n{usage}");
        exit(2)
    };
    let mut args = defaults;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{usage}");
            exit(0);
        }
        if flag
            == if is_chatroom {
                "--no-deflate"
            } else {
                "--deflate"
            }
        {
            args.deflate = !is_chatroom;
            continue;
        }
        if flag
            == if is_chatroom {
                "--no-metrics"
            } else {
                "--metrics"
            }
        {
            args.metrics = !is_chatroom;
            continue;
        }
        let known = [
            "--host",
            "--port",
            "--max-users",
            "--max-memory",
            "--threads",
            "--tls-cert",
            "--tls-key",
        ]
        .contains(&flag.as_str())
            || (!is_chatroom && flag == "--deflate-dedicated")
            || (is_chatroom
                && [
                    "--max-message",
                    "--redis",
                    "--redis-maxlen",
                    "--redis-pending",
                ]
                .contains(&flag.as_str()));
        if !known {
            fail(format!("unknown flag {flag}"));
        }
        let Some(value) = it.next() else {
            fail(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--host" => args.host = value.clone(),
            "--port" => args.port = number(&flag, &value).unwrap_or_else(|why| fail(why)),
            "--max-users" => args.max_users = number(&flag, &value).unwrap_or_else(|why| fail(why)),
            "--max-memory" => {
                args.max_memory = number(&flag, &value).unwrap_or_else(|why| fail(why))
            }
            "--threads" => match number(&flag, &value) {
                Ok(n) if (1..=256).contains(&n) => args.threads = n,
                _ => fail(format!("--threads takes 1 to 256, not {value:?}")),
            },
            "--deflate-dedicated" => match number(&flag, &value) {
                Ok(kib) if wsloop::deflate::Deflate::dedicated(kib).is_some() => {
                    args.deflate_dedicated = Some(kib)
                }
                _ => fail(format!(
                    "--deflate-dedicated takes 3, 4, 8, 16, 32, 64, 128 or 256 (KiB), not {value:?}"
                )),
            },
            "--redis" => args.redis = Some(value.clone()),
            "--tls-cert" => args.tls_cert = Some(value.clone()),
            "--tls-key" => args.tls_key = Some(value.clone()),
            "--redis-maxlen" => {
                args.redis_maxlen = Some(number(&flag, &value).unwrap_or_else(|why| fail(why)))
            }
            "--redis-pending" => {
                args.redis_pending = Some(number(&flag, &value).unwrap_or_else(|why| fail(why)))
            }
            _ => args.max_message = number(&flag, &value).unwrap_or_else(|why| fail(why)),
        }
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        fail("--tls-cert and --tls-key go together".into());
    }
    args
}

/// Starts `env_logger` at `info` unless `RUST_LOG` says otherwise (`RUST_LOG=debug`, `RUST_LOG=wsloop=trace`).
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("bad value for {flag}: {value:?}"))
}
