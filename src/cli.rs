//! The command line: `ballast run`, `ballast check`, `ballast import`, `ballast demo`, `ballast backlog`.
//!
//! This is the binary's edge: errors become `anyhow` chains printed once, and exit codes are
//! decided here (0 ok, 1 failed, 2 usage — clap's).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat};
use crate::listener::socket::somaxconn;
use crate::runtime::signals::{Request, Signals};
use crate::runtime::{Runtime, ShutdownOutcome};

/// ballast: a load balancer for Linux.
#[derive(Debug, Parser)]
#[command(name = "ballast", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the balancer with a configuration file.
    Run {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE", required_unless_present_any = ["keepalived", "nginx"])]
        config: Option<PathBuf>,
        /// Or another program's configuration, imported.
        #[command(flatten)]
        foreign: ForeignArgs,
        /// Serve binary upgrades on this unix socket: a new ballast started with the same
        /// socket and --takeover receives the listening sockets, then this one drains and exits.
        #[arg(long, value_name = "PATH")]
        upgrade_socket: Option<PathBuf>,
        /// Take the listening sockets over from the ballast serving --upgrade-socket.
        #[arg(long, requires = "upgrade_socket")]
        takeover: bool,
    },
    /// Validate a configuration file without running it; prints every problem found.
    Check {
        /// The TOML configuration file.
        #[arg(short, long, value_name = "FILE", required_unless_present_any = ["keepalived", "nginx"])]
        config: Option<PathBuf>,
        /// Or another program's configuration, imported.
        #[command(flatten)]
        foreign: ForeignArgs,
    },
    /// Print the ballast TOML equivalent of a Keepalived, nginx or ipvsadm-save configuration;
    /// warnings and ignored directives go to stderr (and as comments at the top).
    Import {
        /// The format of FILE.
        #[arg(value_enum)]
        format: ImportFormat,
        /// The file to import (`-` reads standard input, for ipvsadm).
        file: PathBuf,
    },
    /// Run the balancer on its embedded default: three demo backends and a TCP listener on
    /// 127.0.0.1 spreading connections over them round robin.
    Demo {
        /// Port for the demo listener on 127.0.0.1.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Print the embedded configuration (with the backends' ports filled in) and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Show every listening TCP socket's accept queue (length, maximum, whether the backlog was
    /// truncated, owning process), the host's backlog limits and the listen-overflow counters.
    /// Reads the kernel directly; needs no configuration and no root (root also sees other
    /// users' processes).
    Backlog(BacklogArgs),
    /// Talk to a running ballast through its admin API: list services and servers as
    /// `ipvsadm -Ln` does, change weights and states, add and remove servers, reload.
    Ctl(crate::admin::ctl::CtlArgs),
}

/// `--keepalived FILE` / `--nginx FILE`: run or check another program's configuration, imported
/// as `ballast import` does (see [`crate::import`]).
#[derive(Debug, clap::Args)]
pub struct ForeignArgs {
    /// A keepalived.conf to import and use instead of a ballast configuration.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "nginx"])]
    pub keepalived: Option<PathBuf>,
    /// An nginx.conf to import and use instead of a ballast configuration.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config"])]
    pub nginx: Option<PathBuf>,
}

/// The formats `ballast import` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ImportFormat {
    /// keepalived.conf
    Keepalived,
    /// nginx.conf
    Nginx,
    /// `ipvsadm-save -n` output
    Ipvsadm,
}

impl From<ImportFormat> for crate::import::Format {
    fn from(f: ImportFormat) -> Self {
        match f {
            ImportFormat::Keepalived => crate::import::Format::Keepalived,
            ImportFormat::Nginx => crate::import::Format::Nginx,
            ImportFormat::Ipvsadm => crate::import::Format::Ipvsadm,
        }
    }
}

/// The configuration named by `-c`, `--keepalived` or `--nginx` (clap makes exactly one
/// present); the import's warnings are printed on stderr.
fn load(config: Option<PathBuf>, foreign: ForeignArgs) -> Result<Config> {
    use crate::import::{self, Format};
    let (format, path) = match (config, foreign.keepalived, foreign.nginx) {
        (Some(path), _, _) => return Ok(Config::load(&path)?),
        (None, Some(path), _) => (Format::Keepalived, path),
        (None, None, Some(path)) => (Format::Nginx, path),
        (None, None, None) => {
            anyhow::bail!("a configuration is required: -c FILE, --keepalived FILE or --nginx FILE")
        }
    };
    let (cfg, imported) = import::load(format, &path)?;
    for note in imported.notes() {
        eprintln!("ballast: {note}");
    }
    Ok(cfg)
}

fn import(format: ImportFormat, file: &std::path::Path) -> Result<()> {
    let imported = crate::import::import_file(format.into(), file)?;
    for note in imported.notes() {
        eprintln!("ballast: {note}");
    }
    print!("{}", imported.toml);
    Ok(())
}

/// Options of `ballast backlog`.
#[derive(Debug, clap::Args)]
pub struct BacklogArgs {
    /// Only the sockets of running ballast processes, with each listener's workers.
    #[arg(long)]
    pub own: bool,
    /// Only sockets listening on this port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// JSON for scripts (with --watch: one JSON document per line per sample).
    #[arg(long)]
    pub json: bool,
    /// Explain in plain words what to raise and why.
    #[arg(long)]
    pub advise: bool,
    /// Sample again every SECS seconds (default 1) and show how the counters moved in between;
    /// runs until interrupted unless --count is given.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1",
          value_parser = parse_interval)]
    pub watch: Option<std::time::Duration>,
    /// With --watch: stop after N intervals.
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.01..=3600.0).contains(&secs) {
        return Err(format!("{s} is out of range: 0.01 to 3600 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Runs the parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check { config, foreign } => load(config, foreign).and_then(check),
        Command::Run {
            config,
            foreign,
            upgrade_socket,
            takeover,
        } => load(config, foreign)
            .and_then(|cfg| serve(cfg, None, upgrade_socket.map(|p| (p, takeover)))),
        Command::Import { format, file } => import(format, &file),
        Command::Demo { port, print_config } => demo(port, print_config),
        Command::Backlog(args) => backlog(&args),
        Command::Ctl(args) => crate::admin::ctl::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ballast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(cfg: Config) -> Result<()> {
    // Certificates are files of their own: load them exactly as `run` will.
    let mut tls_errors = Vec::new();
    for l in cfg.listeners.iter().filter(|l| !l.certificates.is_empty()) {
        if let Err(e) = crate::tls::check(&l.certificates) {
            tls_errors.push(format!(
                "listener \"{}\": {:#}",
                l.name,
                anyhow::Error::new(e)
            ));
        }
    }
    for u in &cfg.upstreams {
        if let Some(t) = &u.http.tls {
            if let Err(e) = crate::tls::client_config(&t.verify, &[]) {
                tls_errors.push(format!(
                    "upstream \"{}\": {:#}",
                    u.name,
                    anyhow::Error::new(e)
                ));
            }
        }
    }
    if !tls_errors.is_empty() {
        anyhow::bail!("{}", tls_errors.join("\n"));
    }
    for warning in warnings(&cfg) {
        println!("warning: {warning}");
    }
    let servers: usize = cfg.upstreams.iter().map(|u| u.servers.len()).sum();
    println!(
        "{}: ok ({} listeners, {} upstreams, {} servers)",
        cfg.origin,
        cfg.listeners.len(),
        cfg.upstreams.len(),
        servers
    );
    Ok(())
}

/// Problems that do not stop ballast from running but that an operator should know about.
fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(max) = somaxconn() {
        for l in cfg.listeners.iter().filter(|l| l.backlog > max) {
            out.push(format!(
                "listener \"{}\" asks for backlog {} but net.core.somaxconn is {}: the kernel will \
                 silently truncate it to {}; raise net.core.somaxconn",
                l.name, l.backlog, max, max
            ));
        }
    }
    out.extend(nofile_warning(cfg));
    out.extend(crate::secret::exposed_files(cfg));
    out
}

/// Whether the hard RLIMIT_NOFILE of this shell can hold the connection limits (`run` raises
/// the soft limit itself, up to the hard one).
fn nofile_warning(cfg: &Config) -> Option<String> {
    use crate::runtime::nofile;
    let (_, hard) = nofile::current().ok()?;
    let hard = hard?;
    let budget = nofile::budget(cfg, Some(hard));
    (budget.needed > hard).then(|| nofile::advice(&budget, hard))
}

/// `ballast backlog`: one report, or with `--watch` a report per interval with the counters'
/// movement. Fails (exit 1, after printing what could be read) when the sockets could not be
/// listed.
fn backlog(args: &BacklogArgs) -> Result<()> {
    use crate::backlog::{self, report, Filter};
    use std::io::Write as _;
    let filter = Filter {
        own: args.own,
        port: args.port,
    };
    let print = |mut r: backlog::Report, one_line: bool| -> Option<String> {
        if args.advise {
            r.advice = report::advise(&r);
        }
        let out = if args.json {
            report::json(&r, one_line) + "\n"
        } else {
            report::text(&r)
        };
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (`| head`) ends the output; nothing else to report.
        let _ = stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush());
        r.sockets_error
    };
    let mut failed = None;
    match args.watch {
        None => failed = print(backlog::collect(filter), false),
        Some(every) => {
            let mut before = backlog::collect(filter);
            let mut taken = std::time::Instant::now();
            let mut n = 0u64;
            while args.count.is_none_or(|c| n < c) {
                std::thread::sleep(every);
                let now = backlog::collect(filter);
                let at = std::time::Instant::now();
                let secs = at.duration_since(taken).as_secs_f64();
                if n > 0 && !args.json {
                    println!("---");
                }
                failed = print(now.clone().with_delta(&before, secs), true).or(failed);
                before = now;
                taken = at;
                n += 1;
            }
        }
    }
    match failed {
        Some(e) => anyhow::bail!("cannot list the listening sockets: {e}"),
        None => Ok(()),
    }
}

fn init_logging(cfg: &Config) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            EnvFilter::try_new(&v).context("RUST_LOG is not a valid filter")?
        }
        _ => EnvFilter::try_new(&cfg.global.log_level).with_context(|| {
            format!(
                "global.log_level {:?} is not a valid filter",
                cfg.global.log_level
            )
        })?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match cfg.global.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A subscriber may already be installed (tests); that one is kept.
    let _ = result;
    Ok(())
}

fn tokio_runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .thread_name("ballast")
        .build()
        .context("cannot start the async runtime")
}

/// Runs `cfg` until SIGTERM/SIGINT, then shuts down gracefully. `before_stop` runs after the
/// listeners are up (the demo uses it to print instructions) and returns a token cancelled at exit.
fn serve(
    cfg: Config,
    before_stop: Option<&dyn Fn(&Runtime)>,
    upgrade: Option<(PathBuf, bool)>,
) -> Result<()> {
    use crate::runtime::upgrade;
    init_logging(&cfg)?;
    for warning in crate::secret::exposed_files(&cfg) {
        tracing::warn!("{warning}");
    }
    crate::privilege::needs_switch(&cfg).context("cannot drop privileges")?;
    crate::runtime::nofile::apply(&cfg);
    let (inherited, takeover) = match &upgrade {
        Some((path, true)) => {
            let (mut inherited, t) = upgrade::takeover(path)
                .with_context(|| format!("cannot take over through {}", path.display()))?;
            inherited.defer_admin = cfg.admin.is_some();
            (inherited, Some(t))
        }
        _ => (upgrade::Inherited::default(), None),
    };
    let rt = tokio_runtime(cfg.global.threads)?;
    rt.block_on(async move {
        let mut signals = Signals::install().context("cannot install signal handlers")?;
        let grace = cfg.global.shutdown_grace;
        let origin = cfg.origin.clone();
        let mut runtime = Runtime::start_with(cfg, inherited)
            .await
            .with_context(|| format!("cannot start with {origin}"))?;
        tracing::info!(config = %origin,
            max_connections = runtime.global_limit().max().unwrap_or(0), "ballast running");
        if let Some(t) = takeover {
            upgrade::finish_takeover(&mut runtime, t).await;
        }
        let upgrades = match &upgrade {
            Some((path, _)) => Some(
                upgrade::listen(path)
                    .with_context(|| format!("cannot listen for upgrades on {}", path.display()))?,
            ),
            None => None,
        };
        // Everything that needs root at start is done: bound, opened, listening.
        if let Err(e) = crate::privilege::drop_after_start(runtime.config()).await {
            // Nothing runs with more privilege than configured: stop what started, cleanly.
            runtime.shutdown(std::time::Duration::ZERO).await;
            return Err(anyhow::Error::new(e).context("cannot drop privileges"));
        }
        let mut upgraded = false;
        if let Some(f) = before_stop {
            f(&runtime);
        }
        let mut api_reloads = runtime.take_reload_requests();
        loop {
            let request = tokio::select! {
                r = signals.next() => r,
                Some(r) = next_reload(&mut api_reloads) => {
                    runtime.answer(r).await;
                    continue;
                }
                Some(conn) = upgrade::next_request(&upgrades) => {
                    if upgrade::serve_handover(&mut runtime, conn).await {
                        upgraded = true;
                        break;
                    }
                    continue;
                }
            };
            match request {
                Request::Stop => break,
                Request::DumpStats => {
                    tracing::info!("counters\n{}", runtime.summary());
                    runtime.reopen_access_log();
                }
                Request::Reload => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = runtime.reload_file().await;
                }
            }
        }
        let abort = runtime.abort_handle();
        let summary_at_end = runtime.summary_handle();
        let shutdown = runtime.shutdown(grace);
        tokio::pin!(shutdown);
        let outcome = loop {
            tokio::select! {
                outcome = &mut shutdown => break outcome,
                req = signals.next() => if req == Request::Stop {
                    tracing::warn!("second stop signal: closing all connections now");
                    abort.cancel();
                },
            }
        };
        match outcome {
            ShutdownOutcome::Drained => tracing::info!("all connections finished; exiting"),
            ShutdownOutcome::Aborted(n) => tracing::info!(closed = n, "exiting"),
        }
        tracing::info!("final counters\n{}", summary_at_end());
        // After an upgrade the socket path belongs to the new process.
        if let (Some((path, _)), false) = (&upgrade, upgraded) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    })
}

/// The next reload request of the admin API; never, without one.
async fn next_reload(
    rx: &mut Option<tokio::sync::mpsc::Receiver<crate::admin::ReloadRequest>>,
) -> Option<crate::admin::ReloadRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn demo(port: u16, print_config: bool) -> Result<()> {
    // The demo backends get a small runtime of their own; the balancer gets the configured one.
    let rt = tokio_runtime(1)?;
    let stop = CancellationToken::new();
    let backends = rt
        .block_on(async {
            let mut addrs = Vec::new();
            for i in 1..=3 {
                addrs.push(crate::demo::spawn_backend(format!("backend-{i}"), stop.clone()).await?);
            }
            Ok::<_, std::io::Error>([addrs[0], addrs[1], addrs[2]])
        })
        .context("cannot start the demo backends on 127.0.0.1")?;
    let text = crate::demo::config_text(port, &backends);
    if print_config {
        print!("{text}");
        return Ok(());
    }
    let cfg = Config::from_str(&text, "<demo>").context("the embedded demo configuration")?;
    // The backends live on `rt`; the balancer gets its own runtime inside `serve`.
    let _keep = rt;
    serve(
        cfg,
        Some(&|r: &Runtime| {
            let addr = r
                .listener_addr("demo")
                .map(|a| a.to_string())
                .unwrap_or_default();
            println!("\nballast demo: a TCP listener on {addr}, round robin over three backends:");
            for (i, b) in backends.iter().enumerate() {
                println!("  backend-{} at {b}", i + 1);
            }
            println!("\nTry, in another terminal:");
            println!("  for i in 1 2 3 4 5 6; do curl -s http://{addr}/; done");
            println!(
                "  echo hello | nc -q1 {} {}",
                r.listener_addr("demo")
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default(),
                port
            );
            println!(
                "  kill -USR1 {}    # log per-server counters",
                std::process::id()
            );
            println!(
                "\nCtrl-C stops it (connections get {:?} to finish).\n",
                r.config().global.shutdown_grace
            );
        }),
        None,
    )
}
