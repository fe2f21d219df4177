//! Access logs: one line per TCP connection (when it ends) and per HTTP request (when its
//! response body ends), to stdout or a file, as text (`key=value` pairs) or JSON
//! (`[global] access_log`, `access_log_format`).
//!
//! The data path never waits for the log: it hands an [`Entry`] to a bounded channel with
//! `try_send`, and a writer thread of its own formats and writes the lines. When the channel is
//! full (the disk cannot keep up), the entry is dropped and counted ([`AccessLog::dropped`]);
//! the connection goes on. The writer buffers and flushes whenever the channel runs empty, so a
//! quiet log is still current within a moment. SIGUSR1 asks it to reopen the file (after
//! logrotate moved it), as nginx does.
//!
//! A write that fails (a full disk: `ENOSPC`) costs the line, never the request: the line is
//! counted ([`AccessLog::write_errors`], `ballast_access_log_errors_total`) and the writer goes
//! on. Lines still in its buffer are kept and written once the disk has room again. The failure
//! is logged at warn level when it starts, then at most once per [`REPORT_EVERY`] with the count
//! of lines lost since, and once more when writes succeed again (not one line per request). While
//! writes fail, the writer retries its buffer at every idle tick, so logging resumes without
//! waiting for traffic.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::config::{AccessLogConfig, AccessLogFormat, AccessLogTarget};

/// Entries waiting for the writer at most; more are dropped and counted.
const QUEUE: usize = 16 * 1024;

/// While writes keep failing, how often the failure is logged again.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The server that answered an HTTP request, attached to its response for the log.
#[derive(Debug, Clone, Copy)]
pub struct ServedBy(pub SocketAddr);

/// One line to write.
#[derive(Debug)]
pub enum Entry {
    /// A TCP connection ended.
    Tcp {
        /// When it ended.
        time: SystemTime,
        /// The listener.
        listener: String,
        /// The client.
        client: SocketAddr,
        /// The server it was relayed to, if any.
        server: Option<SocketAddr>,
        /// How it ended: `closed`, `idle_timeout`, `client_reset`, `server_reset`, `aborted`,
        /// `no_server`, `proxy_error`.
        outcome: &'static str,
        /// Bytes from the client to the server.
        bytes_in: u64,
        /// Bytes from the server to the client.
        bytes_out: u64,
        /// How long it lasted.
        duration: Duration,
    },
    /// An HTTP request was answered.
    Http {
        /// When the response body ended.
        time: SystemTime,
        /// The listener.
        listener: String,
        /// The client.
        client: SocketAddr,
        /// The method.
        method: String,
        /// The path (and query).
        path: String,
        /// The response status.
        status: u16,
        /// Response body bytes sent.
        bytes: u64,
        /// From the request's arrival to the end of the response body.
        duration: Duration,
        /// The server that answered, if one did.
        server: Option<SocketAddr>,
        /// The request id.
        request_id: String,
    },
}

enum Msg {
    Entry(Entry),
    Flush(mpsc::Sender<()>),
}

/// The access log of a runtime; shared by every listener.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<Msg>,
    reopen: Arc<AtomicBool>,
    dropped: AtomicU64,
    /// Lines lost because writing them failed; the writer thread counts them.
    write_errors: Arc<AtomicU64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl AccessLog {
    /// Opens the log and starts its writer thread.
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub fn start(config: &AccessLogConfig) -> std::io::Result<Arc<AccessLog>> {
        let out = Output::open(&config.target)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let write_errors = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            rx,
            out,
            target: config.target.clone(),
            format: config.format,
            reopen: Arc::clone(&reopen),
            errors: Errors {
                count: Arc::clone(&write_errors),
                failing: None,
            },
        };
        std::thread::Builder::new()
            .name("ballast-access-log".into())
            .spawn(move || writer.run())?;
        Ok(Arc::new(AccessLog {
            tx,
            reopen,
            dropped: AtomicU64::new(0),
            write_errors,
        }))
    }

    /// Queues an entry; never blocks. A full queue drops it (counted).
    pub fn log(&self, entry: Entry) {
        match self.tx.try_send(Msg::Entry(entry)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Entries dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lines lost because writing them failed (a full disk, an I/O error).
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// Asks the writer to reopen the file (SIGUSR1, after logrotate).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Waits (at most `within`) until every entry queued so far is written and flushed.
    pub fn flush(&self, within: Duration) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(within);
        }
    }
}

enum Output {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(std::io::BufWriter<std::fs::File>),
}

impl Output {
    fn open(target: &AccessLogTarget) -> std::io::Result<Output> {
        Ok(match target {
            AccessLogTarget::Stdout => Output::Stdout(std::io::BufWriter::new(std::io::stdout())),
            AccessLogTarget::File(path) => {
                Output::File(std::io::BufWriter::new(open_append(path)?))
            }
        })
    }

    fn writer(&mut self) -> &mut dyn std::io::Write {
        match self {
            Output::Stdout(w) => w,
            Output::File(w) => w,
        }
    }
}

fn open_append(path: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

struct Writer {
    rx: Receiver<Msg>,
    out: Output,
    target: AccessLogTarget,
    format: AccessLogFormat,
    reopen: Arc<AtomicBool>,
    errors: Errors,
}

/// Write failures: the count the metrics read, and the state of the rate-limited reports.
struct Errors {
    /// Lines lost (shared with [`AccessLog::write_errors`]).
    count: Arc<AtomicU64>,
    /// Set while writes fail.
    failing: Option<Failing>,
}

/// A run of failed writes.
struct Failing {
    /// When the first write of the run failed.
    since: Instant,
    /// When the failure was last logged.
    reported: Instant,
    /// Lines lost since then.
    lost_since_report: u64,
    /// Lines lost in the whole run.
    lost: u64,
}

impl Errors {
    /// A write or flush failed; `lost` says whether a line was lost with it (a failed flush
    /// keeps the buffered lines for the next try).
    fn failed(&mut self, target: &AccessLogTarget, e: &std::io::Error, lost: bool) {
        let n = u64::from(lost);
        self.count.fetch_add(n, Ordering::Relaxed);
        let now = Instant::now();
        match &mut self.failing {
            None => {
                tracing::warn!(file = %describe(target), error = %e,
                    "access log write failed; lines are dropped and counted \
                     (ballast_access_log_errors_total) until writes succeed again, \
                     and this is logged again at most every {}s", REPORT_EVERY.as_secs());
                self.failing = Some(Failing {
                    since: now,
                    reported: now,
                    lost_since_report: n,
                    lost: n,
                });
            }
            Some(f) => {
                f.lost += n;
                f.lost_since_report += n;
                if now.duration_since(f.reported) >= REPORT_EVERY {
                    tracing::warn!(file = %describe(target), error = %e, lost = f.lost_since_report,
                        failing_for = ?now.duration_since(f.since),
                        "access log writes still failing");
                    f.reported = now;
                    f.lost_since_report = 0;
                }
            }
        }
    }

    /// Everything so far reached the file.
    fn succeeded(&mut self, target: &AccessLogTarget) {
        if let Some(f) = self.failing.take() {
            tracing::warn!(file = %describe(target), lost = f.lost, failed_for = ?f.since.elapsed(),
                "access log writes succeed again");
        }
    }
}

impl Writer {
    fn run(mut self) {
        let mut line = String::with_capacity(512);
        loop {
            if self.reopen.swap(false, Ordering::Relaxed) {
                let _ = self.out.writer().flush();
                match Output::open(&self.target) {
                    Ok(o) => self.out = o,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reopen the access log; writing on to the old file")
                    }
                }
            }
            let first = match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    if self.errors.failing.is_some() {
                        // Retry what the buffer kept: the disk may have room again.
                        self.flush();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.out.writer().flush();
                    return;
                }
            };
            // Everything already queued, then one flush.
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Entry(e) => {
                        line.clear();
                        format(&e, self.format, &mut line);
                        if let Err(e) = self.out.writer().write_all(line.as_bytes()) {
                            self.errors.failed(&self.target, &e, true);
                        }
                    }
                    Msg::Flush(ack) => {
                        self.flush();
                        let _ = ack.send(());
                    }
                }
                next = self.rx.try_recv().ok();
            }
            self.flush();
        }
    }

    /// Flushes the buffer; a failure keeps it (std's `BufWriter` drops only what was written).
    fn flush(&mut self) {
        match self.out.writer().flush() {
            Ok(()) => self.errors.succeeded(&self.target),
            Err(e) => self.errors.failed(&self.target, &e, false),
        }
    }
}

/// Where the log goes, for messages.
fn describe(target: &AccessLogTarget) -> String {
    match target {
        AccessLogTarget::Stdout => "stdout".to_owned(),
        AccessLogTarget::File(p) => p.display().to_string(),
    }
}

/// One line for `e`, ending in a newline.
pub fn format(e: &Entry, fmt: AccessLogFormat, out: &mut String) {
    let time = |t: &SystemTime| humantime::format_rfc3339_millis(*t).to_string();
    let opt = |a: &Option<SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
    match (fmt, e) {
        (
            AccessLogFormat::Json,
            Entry::Tcp {
                time: t,
                listener,
                client,
                server,
                outcome,
                bytes_in,
                bytes_out,
                duration,
            },
        ) => {
            let v = serde_json::json!({
                "time": time(t), "type": "tcp", "listener": listener, "client": client.to_string(),
                "server": server.map(|s| s.to_string()), "outcome": outcome,
                "bytes_in": bytes_in, "bytes_out": bytes_out, "duration_ms": duration.as_secs_f64() * 1000.0,
            });
            let _ = writeln!(out, "{v}");
        }
        (
            AccessLogFormat::Json,
            Entry::Http {
                time: t,
                listener,
                client,
                method,
                path,
                status,
                bytes,
                duration,
                server,
                request_id,
            },
        ) => {
            let v = serde_json::json!({
                "time": time(t), "type": "http", "listener": listener, "client": client.to_string(),
                "method": method, "path": path, "status": status, "bytes": bytes,
                "duration_ms": duration.as_secs_f64() * 1000.0,
                "server": server.map(|s| s.to_string()), "request_id": request_id,
            });
            let _ = writeln!(out, "{v}");
        }
        (
            AccessLogFormat::Text,
            Entry::Tcp {
                time: t,
                listener,
                client,
                server,
                outcome,
                bytes_in,
                bytes_out,
                duration,
            },
        ) => {
            let _ = writeln!(
                out,
                "{} tcp listener={listener} client={client} server={} outcome={outcome} bytes_in={bytes_in} bytes_out={bytes_out} duration_ms={:.3}",
                time(t),
                opt(server),
                duration.as_secs_f64() * 1000.0
            );
        }
        (
            AccessLogFormat::Text,
            Entry::Http {
                time: t,
                listener,
                client,
                method,
                path,
                status,
                bytes,
                duration,
                server,
                request_id,
            },
        ) => {
            let _ = writeln!(
                out,
                "{} http listener={listener} client={client} method={method} path={path:?} status={status} bytes={bytes} duration_ms={:.3} server={} request_id={request_id}",
                time(t),
                duration.as_secs_f64() * 1000.0,
                opt(server)
            );
        }
    }
}

/// Logs the end of a TCP connection of `route`, when it has an access log. Called once per
/// connection, after the relay: the allocation for the entry is off the byte path.
pub fn tcp(
    route: &crate::proxy::Route,
    client: SocketAddr,
    server: Option<SocketAddr>,
    outcome: &'static str,
    bytes: (u64, u64),
    started: Instant,
) {
    if let Some(log) = &route.access_log {
        log.log(Entry::Tcp {
            time: SystemTime::now(),
            listener: route.listener.config.name.clone(),
            client,
            server,
            outcome,
            bytes_in: bytes.0,
            bytes_out: bytes.1,
            duration: started.elapsed(),
        });
    }
}

/// What an HTTP request's line needs before its response ends.
#[derive(Debug)]
pub struct Pending {
    /// The log.
    pub log: Arc<AccessLog>,
    /// The listener.
    pub listener: String,
    /// The client.
    pub client: SocketAddr,
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The status.
    pub status: u16,
    /// When the request arrived.
    pub started: Instant,
    /// The server that answered.
    pub server: Option<SocketAddr>,
    /// The request id.
    pub request_id: String,
}

/// A response body that counts what it sends and writes the request's access-log line when it
/// ends (or is dropped: a client gone mid-body is logged with the bytes sent so far).
#[derive(Debug)]
pub struct Logged<B> {
    inner: B,
    bytes: u64,
    pending: Option<Box<Pending>>,
}

impl<B> Logged<B> {
    /// `inner`, logged through `pending` when it ends; `None` = not logged.
    pub fn new(inner: B, pending: Option<Box<Pending>>) -> Logged<B> {
        Logged {
            inner,
            bytes: 0,
            pending,
        }
    }

    fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            let p = *p;
            p.log.log(Entry::Http {
                time: SystemTime::now(),
                listener: p.listener,
                client: p.client,
                method: p.method,
                path: p.path,
                status: p.status,
                bytes: self.bytes,
                duration: p.started.elapsed(),
                server: p.server,
                request_id: p.request_id,
            });
        }
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Logged<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(),
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_lines_carry_every_field() {
        let e = Entry::Http {
            time: SystemTime::UNIX_EPOCH,
            listener: "web".into(),
            client: "10.0.0.1:5000".parse().expect("addr"),
            method: "GET".into(),
            path: "/a b".into(),
            status: 200,
            bytes: 12,
            duration: Duration::from_millis(3),
            server: None,
            request_id: "abc".into(),
        };
        let mut s = String::new();
        format(&e, AccessLogFormat::Text, &mut s);
        assert_eq!(
            s,
            "1970-01-01T00:00:00.000Z http listener=web client=10.0.0.1:5000 method=GET path=\"/a b\" status=200 bytes=12 duration_ms=3.000 server=- request_id=abc\n"
        );
        s.clear();
        format(&e, AccessLogFormat::Json, &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert_eq!(v["status"], 200);
        assert_eq!(v["path"], "/a b");
        assert!(v["server"].is_null());
    }

    #[test]
    fn a_device_that_is_always_full_costs_lines_counted_and_never_blocks() {
        // /dev/full accepts the open and answers every write with ENOSPC.
        let config = AccessLogConfig {
            target: AccessLogTarget::File(PathBuf::from("/dev/full")),
            format: AccessLogFormat::Text,
        };
        let log = AccessLog::start(&config).expect("open /dev/full");
        let started = Instant::now();
        for i in 0..500u16 {
            log.log(Entry::Tcp {
                time: SystemTime::UNIX_EPOCH,
                listener: "l".into(),
                client: SocketAddr::from(([127, 0, 0, 1], i)),
                server: None,
                outcome: "closed",
                bytes_in: 0,
                bytes_out: 0,
                duration: Duration::ZERO,
            });
        }
        log.flush(Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the writer stalled"
        );
        // What does not fit in the writer's buffer is lost and counted; the buffer is kept.
        let lost = log.write_errors();
        assert!(lost > 400 && lost < 500, "lost {lost}");
        assert_eq!(
            log.dropped(),
            0,
            "nothing was dropped for want of queue space"
        );
    }
}
