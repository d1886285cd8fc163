//! What every example shares: the command line (`server` / `client`, `--addr`, `--mode`,
//! `--log-level`), logging through simplelog, Ctrl-C through the `ctrlc` feature, and
//! running one server in the execution mode asked for, with a summary when it stops.
//!
//! Not an example itself: each example pulls it in with `mod common;`.
#![allow(dead_code)] // each example uses a different part

mod activation;
pub mod tls;

use std::fmt::Display;
use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use log::LevelFilter;
use socketserver::{
    BindAddr, Evented, Forking, IntoHandler, Mode, Server, Stats, Synchronous, Threading, Transport,
};

/// The command line of every example: `server` or `client`, each with the shared options
/// and the example's own (`S`, `C`; [`NoOptions`] for none), plus `--log-level`.
#[derive(Parser, Debug)]
pub struct Cli<S: Args, C: Args> {
    /// Which side to run.
    #[command(subcommand)]
    pub cmd: Cmd<S, C>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// `server` or `client`.
#[derive(Subcommand, Debug)]
pub enum Cmd<S: Args, C: Args> {
    /// Run the server.
    Server {
        /// `--addr`, `--mode`.
        #[command(flatten)]
        args: ServerArgs,
        /// The example's own server options.
        #[command(flatten)]
        opts: S,
    },
    /// Run the client.
    Client {
        /// `--addr`.
        #[command(flatten)]
        args: ClientArgs,
        /// The example's own client options.
        #[command(flatten)]
        opts: C,
    },
}

/// For a side without options of its own.
#[derive(Args, Debug, Clone, Copy)]
pub struct NoOptions {}

/// Parses the command line (`--help` and usage errors exit here, status 2) and starts
/// logging. `about`: the example in one line; `server`, `client`: each side in one line.
pub fn parse<S: Args, C: Args>(
    name: &'static str,
    about: &'static str,
    server: &'static str,
    client: &'static str,
) -> Cli<S, C> {
    let matches = Cli::<S, C>::command()
        .name(name)
        .about(about)
        .mut_subcommand("server", |c| c.about(server))
        .mut_subcommand("client", |c| c.about(client))
        .get_matches();
    let cli = Cli::<S, C>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(&cli.log);
    cli
}

/// Options that cannot go together: `error: MSG` on stderr, exit status 2 (clap's usage
/// error).
pub fn usage_error(msg: impl Display) -> ! {
    clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("{msg}\n")).exit()
}

/// `--mode`: which execution mode serves the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// One request at a time, on the serving thread (`TCPServer`).
    Sync,
    /// A bounded worker pool (`ThreadingTCPServer`).
    Threading,
    /// One child process per request (`ForkingTCPServer`).
    Forking,
    /// A readiness loop: idle connections hold no thread (stream examples only).
    Evented,
}

/// The options every example server takes.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on (port 0: the OS picks one; the log line tells which).
    #[arg(long)]
    pub addr: Option<String>,
    /// Execution mode (default: the example's own; evented for echo and upper over TCP).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Behind a load balancer (HAProxy `send-proxy` / `send-proxy-v2`): every connection
    /// must start with a PROXY protocol header (v1 or v2), or it is closed; logs then show
    /// the original client's address. Stream servers only.
    #[arg(long)]
    pub proxy_protocol: bool,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`.
    #[command(flatten)]
    pub tls: tls::TlsServerArgs,
}

/// The options every example client takes.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Address of the server.
    #[arg(long)]
    pub addr: Option<String>,
    /// `--tls-ca`, `--tls-cert`, `--tls-key`.
    #[command(flatten)]
    pub tls: tls::TlsClientArgs,
}

/// `--log-level`, global to both subcommands.
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// How much to log: error, warn, info or debug.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: LevelFilter,
}

/// Logs to stderr: `<RFC 3339 UTC time> [LEVEL] message`.
pub fn init_logging(args: &LogArgs) {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .build();
    // Only fails if a logger is already installed, which would be a bug of the example.
    // One write(2) per line, so the lines of forked children and the parent never mix.
    let _ = simplelog::WriteLogger::init(args.log_level, config, io::LineWriter::new(io::stderr()));
}

/// Per-example server settings; the rest of the builder keeps the crate's defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Example name, at the start of the log lines.
    pub name: &'static str,
    /// Used when `--addr` is not given.
    pub default_addr: &'static str,
    /// Idle timeout: `SO_RCVTIMEO` on each connection.
    pub read_timeout: Option<Duration>,
    /// `SO_SNDTIMEO`; in evented mode, how long a peer may read nothing while output
    /// waits for it. `None`: the crate's default.
    pub write_timeout: Option<Duration>,
    /// Evented mode: most bytes queued for a peer that does not read (`None`: the crate's
    /// default, 1 MiB).
    pub max_output: Option<usize>,
    /// Whole-connection deadline (slowloris defence); `None` for long-lived sessions.
    pub connection_deadline: Option<Duration>,
    /// Most connections open at once; beyond, new ones wait in the kernel backlog.
    pub max_connections: Option<usize>,
    /// The same in evented mode, where an idle connection costs a descriptor and a few
    /// hundred bytes, not a thread.
    pub max_connections_evented: Option<usize>,
    /// Grace period for in-flight requests after Ctrl-C.
    pub shutdown_grace: Duration,
    /// `--mode` when none is given.
    pub default_mode: ModeArg,
    /// How message handlers' byte streams are cut into messages.
    pub framing: socketserver::framing::MessageFraming,
    /// Who may be served, judged on the client's address (behind a proxy: the original
    /// client the PROXY header names, not the proxy). `None`: everyone.
    pub allow: Option<fn(&socketserver::ClientAddr) -> bool>,
    /// Forking mode: keep logging on in the children (`Builder::log_in_children`; off by
    /// default). Safe enough here: besides the serving thread, which forks, only the Ctrl-C
    /// handler and the deadline watchdog log, and only on a signal or an expired deadline.
    pub log_in_children: bool,
}

impl Settings {
    /// Defaults for request/response examples: 60 s idle, 10 min per connection, 1024
    /// connections at once (16 384 in evented mode).
    pub fn new(name: &'static str, default_addr: &'static str) -> Settings {
        Settings {
            name,
            default_addr,
            read_timeout: Some(Duration::from_secs(60)),
            write_timeout: None,
            max_output: None,
            connection_deadline: Some(Duration::from_secs(600)),
            max_connections: Some(1024),
            max_connections_evented: Some(16_384),
            shutdown_grace: Duration::from_secs(10),
            default_mode: ModeArg::Threading,
            framing: socketserver::framing::MessageFraming::default(),
            allow: None,
            log_in_children: false,
        }
    }
}

/// Binds, logs `listening on ADDR`, serves until Ctrl-C/SIGTERM, drains, logs a summary.
/// Exit code 0 after a clean stop, 1 if the server could not start or failed.
pub fn serve<T, H, Marker>(settings: &Settings, args: &ServerArgs, handler: H) -> ExitCode
where
    T: Transport,
    for<'a> &'a str: BindAddr<T>,
    H: IntoHandler<T::Request, Marker>,
{
    let result = match args.mode.unwrap_or(settings.default_mode) {
        ModeArg::Sync => serve_in::<T, Synchronous, H, Marker>(settings, args, handler),
        ModeArg::Threading => serve_in::<T, Threading, H, Marker>(settings, args, handler),
        ModeArg::Forking => serve_in::<T, Forking, H, Marker>(settings, args, handler),
        ModeArg::Evented => serve_in::<T, Evented, H, Marker>(settings, args, handler),
    };
    match result {
        Ok(stats) => {
            log::info!(
                "{}: stopped: {} served, {} errors, {} panics, {} refused, {} timeouts, \
                 {} disconnects, {} dropped",
                settings.name,
                stats.served,
                stats.errors,
                stats.panics,
                stats.rejected + stats.refused,
                stats.timeouts,
                stats.disconnects,
                stats.dropped
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{}: {e}", settings.name);
            ExitCode::FAILURE
        }
    }
}

fn serve_in<T, M, H, Marker>(s: &Settings, args: &ServerArgs, handler: H) -> io::Result<Stats>
where
    T: Transport,
    M: Mode,
    for<'a> &'a str: BindAddr<T>,
    H: IntoHandler<T::Request, Marker>,
{
    let mode = args.mode.unwrap_or(s.default_mode);
    let forking = mode == ModeArg::Forking;
    if mode == ModeArg::Evented {
        // 10 000 idle clients need 10 000 descriptors: raise the soft limit, as Go does.
        match socketserver::raise_fd_limit() {
            Ok((before, after)) if after > before => {
                log::info!(
                    "{}: descriptor limit raised from {before} to {after}",
                    s.name
                )
            }
            Ok(_) => {}
            Err(e) => log::warn!("{}: cannot raise the descriptor limit: {e}", s.name),
        }
    }
    let name = s.name;
    let addr = args.addr.as_deref().unwrap_or(s.default_addr);
    let mut builder = args.tls.apply(name, Server::<T, M>::builder())?;
    let proxied = args.proxy_protocol;
    if proxied {
        let datagram = std::any::TypeId::of::<T::Request>()
            == std::any::TypeId::of::<socketserver::DatagramRequest>();
        if datagram {
            usage_error("--proxy-protocol is for stream servers (TCP), not datagrams");
        }
        builder = builder.proxy_protocol(socketserver::ProxyProtocol::Required);
    }
    let allow = s.allow;
    if let Some(t) = s.write_timeout {
        builder = builder.write_timeout(Some(t));
    }
    if let Some(n) = s.max_output {
        builder = builder.max_output(n);
    }
    let builder = builder
        .read_timeout(s.read_timeout)
        .connection_deadline(s.connection_deadline)
        .max_connections(if mode == ModeArg::Evented {
            s.max_connections_evented
        } else {
            s.max_connections
        })
        .shutdown_grace(s.shutdown_grace)
        .log_in_children(s.log_in_children)
        .framing(s.framing.clone())
        .workers(4, max_workers(mode, s))
        // Forked children do not log (fork safety), so the parent logs each request.
        // Behind a proxy the hook runs once the header is read (in the child, when
        // forking), and judges the original client.
        .verify_request(move |peer| {
            if allow.is_some_and(|allow| !allow(peer)) {
                log::warn!("{name}: {peer}: refused");
                return false;
            }
            if forking && !proxied {
                log::info!("{name}: {peer}: forking a child for the request");
            }
            true
        });
    // A socket passed by systemd (or a hand-over) when there is one, else `bind(addr)`.
    let server = activation::bind_or_adopt(name, builder, addr, handler)?;
    // Signals first: once `listening on` is logged, SIGTERM drains and SIGUSR2 hands over
    // (tests wait for the line).
    socketserver::shutdown_on_ctrl_c([server.handle()]).map_err(io::Error::other)?;
    let usr2 = activation::HandOverSignal::register()?;
    log::info!(
        "{name}: listening on {} ({mode:?} mode{})",
        server.server_address()?,
        if proxied {
            ", PROXY protocol header required"
        } else {
            ""
        }
    );
    activation::notify(name, "READY=1", socketserver::systemd::notify_ready());
    activation::serve_with_hand_over(name, &server, usr2)?;
    activation::notify(name, "STOPPING=1", socketserver::systemd::notify_stopping());
    log::info!("{name}: shutting down: finishing in-flight requests");
    server.server_close();
    Ok(server.stats())
}

/// The pool's maximum: in threading mode a worker for every connection allowed, so that
/// none waits for one (threads start only when every other one is busy); the crate's
/// default (256) otherwise.
fn max_workers(mode: ModeArg, s: &Settings) -> usize {
    match (mode, s.max_connections) {
        (ModeArg::Threading, Some(n)) => n,
        _ => 256,
    }
}

/// The client side's error exit: one line on stderr, exit code 1.
pub fn client_failed(name: &str, what: impl Display) -> ExitCode {
    eprintln!("{name} client: {what}");
    ExitCode::FAILURE
}

/// The line client of the request/response examples over TCP: each line of stdin goes
/// out, and as many bytes as were sent are read back and printed (echo and upper-case
/// replies keep the length).
pub fn tcp_line_client(addr: &str, tls: &tls::TlsClientArgs) -> io::Result<()> {
    use std::io::{BufRead, Read, Write};
    let mut conn = tls::connect(addr, tls)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reply = Vec::new();
    for line in io::stdin().lock().lines() {
        let line = format!("{}\n", line?);
        conn.write_all(line.as_bytes())?;
        reply.resize(line.len(), 0);
        conn.read_exact(&mut reply).map_err(|e| {
            let why = match e.kind() {
                io::ErrorKind::UnexpectedEof => "it closed the connection before replying".into(),
                _ => e.to_string(),
            };
            io::Error::new(e.kind(), format!("the server went away: {why}"))
        })?;
        io::stdout().write_all(&reply)?;
    }
    Ok(())
}

/// The line client over UDP: one datagram per line of stdin (an empty line is an empty
/// datagram); each reply, which must come within 5 s, is printed on a line of its own.
pub fn udp_line_client(addr: &str) -> io::Result<()> {
    use std::io::{BufRead, Write};
    let local = if addr.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let sock = std::net::UdpSocket::bind(local)?;
    sock.connect(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot reach {addr}: {e}")))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = vec![0u8; 65_535];
    for line in io::stdin().lock().lines() {
        sock.send(line?.as_bytes())?;
        let n = sock.recv(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no reply from {addr} within 5 s"),
            ),
            _ => io::Error::new(e.kind(), format!("no reply from {addr}: {e}")),
        })?;
        io::stdout().write_all(&buf[..n])?;
        io::stdout().write_all(b"\n")?;
    }
    Ok(())
}

/// `--udp`, on either side of the request/response examples.
#[derive(Args, Debug, Clone, Copy)]
pub struct UdpFlag {
    /// UDP instead of TCP.
    #[arg(long)]
    pub udp: bool,
}

/// The whole `main` of a request/response example (echo, upper): the server runs
/// `stream` over TCP or `datagram` over UDP (`--udp`); the client is the line client.
pub fn run_line_example<S, SM, D, DM>(
    name: &'static str,
    about: &'static str,
    default_addr: &'static str,
    stream: S,
    datagram: D,
) -> ExitCode
where
    S: IntoHandler<socketserver::StreamRequest, SM>,
    D: IntoHandler<socketserver::DatagramRequest, DM>,
{
    let cli = parse::<UdpFlag, UdpFlag>(
        name,
        about,
        "Run the server.",
        "Send each line of stdin, print each reply.",
    );
    let mut settings = Settings::new(name, default_addr);
    settings.framing = socketserver::framing::MessageFraming::Raw;
    match cli.cmd {
        Cmd::Server { args, opts } if opts.udp => {
            serve::<socketserver::Udp, _, _>(&settings, &args, datagram)
        }
        Cmd::Server { args, .. } => {
            settings.default_mode = ModeArg::Evented;
            serve::<socketserver::Tcp, _, _>(&settings, &args, stream)
        }
        Cmd::Client { args, opts } => {
            let addr = args.addr.as_deref().unwrap_or(default_addr);
            if opts.udp && args.tls.tls_ca.is_some() {
                usage_error("TLS is for stream transports: --tls-ca goes without --udp");
            }
            let result = if opts.udp {
                udp_line_client(addr)
            } else {
                tcp_line_client(addr, &args.tls)
            };
            result.map_or_else(|e| client_failed(name, e), |()| ExitCode::SUCCESS)
        }
    }
}

/// The TCP handler of echo and upper: transforms every chunk that arrives and sends it
/// back, in every mode (a [`socketserver::MessageHandler`] with `MessageFraming::Raw`), and
/// logs how many bytes it served when the connection ends.
pub struct Chunks {
    name: &'static str,
    verb: &'static str,
    transform: fn(&mut [u8]),
    total: u64,
}

impl Chunks {
    pub fn new(name: &'static str, verb: &'static str, transform: fn(&mut [u8])) -> Chunks {
        Chunks {
            name,
            verb,
            transform,
            total: 0,
        }
    }
}

impl socketserver::MessageHandler for Chunks {
    fn handle(&mut self, ch: &mut socketserver::Channel, msg: &[u8]) -> io::Result<()> {
        let mut reply = msg.to_vec();
        (self.transform)(&mut reply);
        ch.push(&reply);
        self.total += msg.len() as u64;
        Ok(())
    }

    fn finish(&mut self, ch: &mut socketserver::Channel) -> io::Result<()> {
        let (name, verb) = (self.name, self.verb);
        log::info!(
            "{name}: {}: {verb} {} bytes",
            ch.client_address(),
            self.total
        );
        Ok(())
    }
}
