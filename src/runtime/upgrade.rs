//! Binary upgrade: a new ballast process takes over the listening sockets of the running one, so
//! no connection is refused while the binary changes (pingora `server/transfer_fd`, sozu
//! `command/src/scm_socket.rs`).
//!
//! ```text
//! old: ballast run -c FILE --upgrade-socket PATH      (serves PATH, a unix stream socket)
//! new: ballast run -c FILE --upgrade-socket PATH --takeover
//!   new ──"ballast-upgrade v1"──▶ old
//!   old ──one sendmsg(2): JSON header + every listening socket (SCM_RIGHTS, unix(7))──▶ new
//!   new: starts, using the inherited sockets for listeners with the same name, address and
//!        number of workers (binds the others), then ──"ready"──▶ old
//!   old: stops its admin server ──"admin-released"──▶ new (which starts its own), then stops
//!        accepting, lets its connections finish (shutdown_grace) and exits
//!   new: takes over PATH for the next upgrade
//! ```
//!
//! The sockets are the same kernel objects in both processes: connections waiting in an accept
//! queue while the old process stops accepting are accepted by the new one, so none is refused.
//! If the new process fails before "ready", the old one goes on as if nothing happened.
//!
//! One message carries every socket, so a handover holds at most [`MAX_FDS`] of them (the
//! kernel's SCM_MAX_FD); a larger set is refused and the old process keeps running.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::config::ListenerConfig;
use crate::listener::BoundListener;

/// The most sockets one handover carries (SCM_MAX_FD).
pub const MAX_FDS: usize = 253;

const HELLO: &str = "ballast-upgrade v1";
const READY: &str = "ready";
const ADMIN_RELEASED: &str = "admin-released";

/// How long each step of the handover may take.
const STEP: Duration = Duration::from_secs(30);

/// What the old process says about each listener it hands over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// The listener's name.
    pub name: String,
    /// Its configured address.
    pub bind: SocketAddr,
    /// The address it really has.
    pub local: SocketAddr,
    /// Its worker sockets (this many fds follow, in worker order).
    pub workers: usize,
}

/// Listening sockets inherited from the old process, waiting for the new runtime to claim them.
#[derive(Debug, Default)]
pub struct Inherited {
    listeners: Vec<(Header, Vec<std::net::TcpListener>)>,
    /// Start the runtime without its admin server; [`super::Runtime::start_admin`] starts it
    /// once the old process has released the address.
    pub defer_admin: bool,
}

impl Inherited {
    /// The inherited sockets of the listener `config` describes, when one with the same name,
    /// address and number of workers was handed over.
    pub fn take(&mut self, config: &ListenerConfig) -> Option<BoundListener> {
        let i = self.listeners.iter().position(|(h, s)| {
            h.name == config.name
                && h.bind == config.bind
                && h.workers == config.workers
                && s.len() == config.workers
        })?;
        let (h, sockets) = self.listeners.swap_remove(i);
        tracing::info!(listener = %h.name, addr = %h.local, workers = h.workers,
            "listening sockets inherited from the old process");
        Some(BoundListener {
            sockets,
            local_addr: h.local,
            somaxconn: crate::listener::socket::somaxconn(),
        })
    }

    /// Names of the listeners handed over and not claimed (their sockets close here; the old
    /// process still has its own until it exits).
    pub fn unclaimed(&self) -> Vec<String> {
        self.listeners.iter().map(|(h, _)| h.name.clone()).collect()
    }
}

/// Why a handover failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// An I/O step failed.
    #[error("upgrade: {step}")]
    Io {
        /// Which step.
        step: &'static str,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The peer said something unexpected.
    #[error("upgrade: {0}")]
    Protocol(String),
}

fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> UpgradeError {
    move |source| UpgradeError::Io { step, source }
}

// === the new process ===

/// The new process's side of a handover in progress.
#[derive(Debug)]
pub struct Takeover {
    stream: BufReader<UnixStream>,
    path: PathBuf,
}

/// Connects to the old process at `path` and receives its listening sockets. Blocking; run it
/// before the async runtime starts or on a blocking thread.
///
/// # Errors
/// When no ballast answers at `path` or the handover breaks off.
pub fn takeover(path: &Path) -> Result<(Inherited, Takeover), UpgradeError> {
    let mut stream =
        UnixStream::connect(path).map_err(io("cannot connect to the upgrade socket"))?;
    stream
        .set_read_timeout(Some(STEP))
        .map_err(io("set timeout"))?;
    stream
        .write_all(format!("{HELLO}\n").as_bytes())
        .map_err(io("send hello"))?;
    let (payload, fds) = receive(&stream)?;
    let headers: Vec<Header> = serde_json::from_slice(&payload)
        .map_err(|e| UpgradeError::Protocol(format!("bad header from the old process: {e}")))?;
    let wanted: usize = headers.iter().map(|h| h.workers).sum();
    if wanted != fds.len() {
        return Err(UpgradeError::Protocol(format!(
            "the old process announced {wanted} sockets and sent {}",
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let listeners = headers
        .into_iter()
        .map(|h| {
            let sockets: Vec<std::net::TcpListener> = fds
                .by_ref()
                .take(h.workers)
                .map(std::net::TcpListener::from)
                .collect();
            (h, sockets)
        })
        .collect();
    Ok((
        Inherited {
            listeners,
            defer_admin: false,
        },
        Takeover {
            stream: BufReader::new(stream),
            path: path.to_path_buf(),
        },
    ))
}

impl Takeover {
    /// Tells the old process the new one runs, and waits until it has released the admin
    /// address. Blocking.
    ///
    /// # Errors
    /// When the old process does not answer in time (it may then still be running).
    pub fn ready(mut self) -> Result<PathBuf, UpgradeError> {
        self.stream
            .get_mut()
            .write_all(format!("{READY}\n").as_bytes())
            .map_err(io("send ready"))?;
        let mut line = String::new();
        self.stream
            .read_line(&mut line)
            .map_err(io("wait for the old process to release the admin address"))?;
        if line.trim() != ADMIN_RELEASED {
            return Err(UpgradeError::Protocol(format!(
                "expected {ADMIN_RELEASED:?} from the old process, got {:?}",
                line.trim()
            )));
        }
        Ok(self.path)
    }
}

fn receive(stream: &UnixStream) -> Result<(Vec<u8>, Vec<OwnedFd>), UpgradeError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (got, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| UpgradeError::Io {
            step: "receive the sockets",
            source: e.into(),
        })?;
        let mut fds = Vec::new();
        let cmsgs = msg.cmsgs().map_err(|e| UpgradeError::Io {
            step: "read the sockets (truncated?)",
            source: e.into(),
        })?;
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel has just installed `fd` in this process's table for
                    // this message (SCM_RIGHTS); nothing else in the process knows it, so taking
                    // ownership here is the only owner, and it is closed exactly once.
                    #[allow(unsafe_code)]
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (msg.bytes, fds)
    };
    // Length-prefixed JSON; the rest of it (if any) follows as plain bytes.
    let mut data = buf.get(..got).unwrap_or_default().to_vec();
    while data.len() < 4 {
        let mut more = [0u8; 4];
        let n = (&*stream).read(&mut more).map_err(io("read the header"))?;
        if n == 0 {
            return Err(UpgradeError::Protocol(
                "the old process closed the connection".into(),
            ));
        }
        data.extend_from_slice(&more[..n]);
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let mut payload = data.split_off(4);
    if payload.len() < len {
        let mut rest = vec![0u8; len - payload.len()];
        (&*stream)
            .read_exact(&mut rest)
            .map_err(io("read the header"))?;
        payload.extend_from_slice(&rest);
    }
    payload.truncate(len);
    Ok((payload, fds))
}

// === the old process ===

/// Sends every listener's sockets to a new process that said hello on `stream`, then waits for
/// it to run. Returns once the new process says it is ready; the caller then stops its admin
/// server and calls [`Handover::admin_released`]. Blocking.
///
/// # Errors
/// When the new process does not say hello or ready in time; the old process keeps running.
pub fn hand_over(
    stream: UnixStream,
    listeners: &[(Header, Vec<OwnedFd>)],
) -> Result<Handover, UpgradeError> {
    stream
        .set_read_timeout(Some(STEP))
        .map_err(io("set timeout"))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io("read hello"))?;
    if line.trim() != HELLO {
        return Err(UpgradeError::Protocol(format!(
            "unexpected greeting {:?}",
            line.trim()
        )));
    }
    let headers: Vec<&Header> = listeners.iter().map(|(h, _)| h).collect();
    let raw: Vec<RawFd> = listeners
        .iter()
        .flat_map(|(_, fds)| fds.iter().map(AsRawFd::as_raw_fd))
        .collect();
    if raw.len() > MAX_FDS {
        return Err(UpgradeError::Protocol(format!(
            "{} listening sockets are more than one handover carries ({MAX_FDS})",
            raw.len()
        )));
    }
    let json = serde_json::to_vec(&headers).map_err(|e| UpgradeError::Protocol(e.to_string()))?;
    let len =
        u32::try_from(json.len()).map_err(|_| UpgradeError::Protocol("header too large".into()))?;
    let mut data = len.to_be_bytes().to_vec();
    data.extend_from_slice(&json);
    let stream = reader.get_ref();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&data)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| UpgradeError::Io {
        step: "send the sockets",
        source: e.into(),
    })?;
    if sent < data.len() {
        (&*stream)
            .write_all(data.get(sent..).unwrap_or_default())
            .map_err(io("send the header"))?;
    }
    line.clear();
    reader
        .read_line(&mut line)
        .map_err(io("wait for the new process"))?;
    if line.trim() != READY {
        return Err(UpgradeError::Protocol(format!(
            "the new process did not start (it said {:?})",
            line.trim()
        )));
    }
    Ok(Handover {
        stream: reader.into_inner(),
    })
}

/// A handover the new process has accepted.
#[derive(Debug)]
pub struct Handover {
    stream: UnixStream,
}

impl Handover {
    /// Tells the new process the admin address is free.
    pub fn admin_released(mut self) {
        let _ = self
            .stream
            .write_all(format!("{ADMIN_RELEASED}\n").as_bytes());
    }
}

/// Binds the upgrade socket at `path`, replacing a stale socket file.
///
/// # Errors
/// When it cannot be bound.
pub fn listen(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if std::fs::symlink_metadata(path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
    {
        std::fs::remove_file(path)?;
    }
    tokio::net::UnixListener::bind(path)
}

// === glue for `ballast run` ===

/// The next connection on the upgrade socket; never, without one.
pub async fn next_request(
    listener: &Option<tokio::net::UnixListener>,
) -> Option<tokio::net::UnixStream> {
    match listener {
        Some(l) => l.accept().await.ok().map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// The old process's side: hands `runtime`'s sockets to the process on `conn`. Returns `true`
/// once the new process runs (the caller then shuts down gracefully), `false` when the handover
/// broke off (logged; this process goes on serving).
pub async fn serve_handover(runtime: &mut super::Runtime, conn: tokio::net::UnixStream) -> bool {
    let sockets = runtime.handover_sockets();
    let count: usize = sockets.iter().map(|(_, f)| f.len()).sum();
    tracing::info!(
        listeners = sockets.len(),
        sockets = count,
        "upgrade: a new process asks for the listening sockets"
    );
    let stream = match conn
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "upgrade aborted; still serving");
            return false;
        }
    };
    let result = tokio::task::spawn_blocking(move || hand_over(stream, &sockets)).await;
    match result {
        Ok(Ok(handover)) => {
            runtime.stop_admin().await;
            handover.admin_released();
            tracing::info!("upgrade: the new process runs; this one stops accepting and drains");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upgrade aborted; still serving");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "upgrade aborted; still serving");
            false
        }
    }
}

/// The new process's side, once its runtime runs: tells the old process, waits for it to free
/// the admin address, then starts the admin server. Failures are logged, not fatal: the
/// listeners already serve.
pub async fn finish_takeover(runtime: &mut super::Runtime, takeover: Takeover) {
    match tokio::task::spawn_blocking(move || takeover.ready()).await {
        Ok(Ok(_)) => tracing::info!("upgrade: took over from the old process"),
        Ok(Err(e)) => tracing::warn!(error = %e, "upgrade: the old process did not confirm"),
        Err(e) => tracing::warn!(error = %e, "upgrade: the old process did not confirm"),
    }
    if let Err(e) = runtime.start_admin().await {
        tracing::error!(error = %e, "upgrade: the admin server could not start");
    }
}
