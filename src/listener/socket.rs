//! Creating listening sockets: backlog, SO_REUSEPORT workers, and clear errors when binding fails.
//!
//! Each worker gets its own socket with SO_REUSEADDR and SO_REUSEPORT set, bound to the same
//! address, and `listen(2)`ed with the configured backlog. The kernel keeps one accept queue per
//! socket and hashes each new connection to one of them (socket(7), SO_REUSEPORT).
//!
//! The backlog: listen(2) silently caps `backlog` at `net.core.somaxconn`
//! (`/proc/sys/net/core/somaxconn`). [`bind`] reads it and reports a truncation, so the operator
//! learns at start, not from `ListenOverflows` under load, that the queue is shorter than asked.
//!
//! A port already in use: sockets that all set SO_REUSEPORT (and share an owner) may bind the same
//! port, so another ballast of the same user would silently share it. Before binding the workers we
//! bind once *without* SO_REUSEPORT, which fails with EADDRINUSE whenever anything listens there.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

use crate::config::ListenerConfig;

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// bind(2) or listen(2) failed.
    #[error("listener \"{listener}\": cannot listen on {addr}: {hint}")]
    Bind {
        /// The listener's name.
        listener: String,
        /// The address it wanted.
        addr: SocketAddr,
        /// What to do about it, in words.
        hint: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// The sockets of one listener, bound and listening, not yet accepting.
#[derive(Debug)]
pub struct BoundListener {
    /// One listening socket per worker, all on `local_addr`.
    pub sockets: Vec<std::net::TcpListener>,
    /// The bound address (the port filled in when 0 was asked for).
    pub local_addr: SocketAddr,
    /// `net.core.somaxconn` as read at bind time, when readable.
    pub somaxconn: Option<u32>,
}

impl BoundListener {
    /// The accept-queue length the kernel really gives each worker socket: min(backlog, somaxconn).
    pub fn effective_backlog(&self, backlog: u32) -> u32 {
        match self.somaxconn {
            Some(max) => backlog.min(max),
            None => backlog,
        }
    }
}

/// Reads `net.core.somaxconn`, the cap the kernel puts on every listen backlog.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::AddrInUse => {
            "address already in use (another process listens there; `ss -ltnp` shows which)"
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        }
        io::ErrorKind::AddrNotAvailable => {
            "address not available (no interface on this host has that IP)"
        }
        io::ErrorKind::Unsupported => "address family not supported (is IPv6 disabled?)",
        _ => "the system refused it",
    }
}

/// The [`ListenerError::Bind`] for a failure of `listener` to bind `addr`, with the hint
/// `hint` gives for the error (TCP and UDP listeners word theirs differently).
pub(crate) fn bind_error(
    listener: &str,
    addr: SocketAddr,
    hint: fn(&io::Error) -> &'static str,
) -> impl FnOnce(io::Error) -> ListenerError {
    let listener = listener.to_owned();
    move |source| ListenerError::Bind {
        listener,
        addr,
        hint: hint(&source),
        source,
    }
}

/// Binds the sockets of a listener: one per worker, each with SO_REUSEPORT and the configured
/// backlog. Warns (through `tracing`) when `net.core.somaxconn` truncates the backlog.
///
/// # Errors
/// [`ListenerError::Bind`] naming the listener, the address and a hint when any socket fails.
pub fn bind(config: &ListenerConfig) -> Result<BoundListener, ListenerError> {
    let err = |addr: SocketAddr| bind_error(&config.name, addr, hint);
    if config.bind.port() != 0 {
        probe_free(config.bind).map_err(err(config.bind))?;
    }
    let mut addr = config.bind;
    let mut sockets = Vec::with_capacity(config.workers);
    for _ in 0..config.workers.max(1) {
        let socket = listen_socket(addr, config).map_err(err(addr))?;
        if addr.port() == 0 {
            // The first socket chose the port; the other workers join it.
            addr = socket.local_addr().map_err(err(addr))?;
        }
        sockets.push(socket);
    }
    let somaxconn = somaxconn();
    if let Some(max) = somaxconn {
        if config.backlog > max {
            tracing::warn!(
                listener = %config.name,
                backlog = config.backlog,
                somaxconn = max,
                "listener \"{}\" asks for backlog {} but net.core.somaxconn is {}: the kernel \
                 silently truncates each accept queue to {}; raise net.core.somaxconn",
                config.name,
                config.backlog,
                max,
                max
            );
        }
    }
    Ok(BoundListener {
        sockets,
        local_addr: addr,
        somaxconn,
    })
}

/// Binds `count` more sockets on `addr`, where this listener's own sockets already listen: they
/// join its SO_REUSEPORT group, appended after the existing ones (a reload raising `workers`).
/// No probe: the address is in use, by us.
///
/// # Errors
/// [`ListenerError::Bind`] as [`bind`].
pub fn bind_siblings(
    config: &ListenerConfig,
    addr: SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, ListenerError> {
    (0..count)
        .map(|_| listen_socket(addr, config).map_err(bind_error(&config.name, addr, hint)))
        .collect()
}

/// Calls listen(2) again on a listening socket with a new backlog: Linux only updates the
/// accept queue's maximum (`sk_max_ack_backlog`), keeping the socket, its queue and the
/// connections in it (listen(2): "If the socket is already in the listening state, the backlog
/// is changed"). The kernel still caps it at `net.core.somaxconn`.
///
/// # Errors
/// What listen(2) said.
pub fn relisten(socket: &impl std::os::fd::AsFd, backlog: u32) -> io::Result<()> {
    SockRef::from(socket).listen(i32::try_from(backlog).unwrap_or(i32::MAX))
}

/// Sets TCP_NODELAY and the keepalive idle time on a listening socket (accepted sockets inherit
/// them), for a reload that changed them.
///
/// # Errors
/// What setsockopt(2) said.
pub fn retune(socket: &impl std::os::fd::AsFd, config: &ListenerConfig) -> io::Result<()> {
    let s = SockRef::from(socket);
    s.set_tcp_nodelay(config.tcp_nodelay)?;
    match config.tcp_keepalive {
        Some(idle) => s.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle)),
        None => s.set_keepalive(false),
    }
}

/// Steers new connections of a SO_REUSEPORT group to its first `keep` sockets, with a classic
/// BPF program (SO_ATTACH_REUSEPORT_CBPF, socket(7)) that returns `random % keep` as the index
/// of the socket to use. The kernel keeps the group's sockets in the order they were bound, and
/// when one closes it moves the *last* one into its place; so while the sockets being retired
/// are exactly those after the first `keep`, closing them never moves a kept one, and the
/// program's indices stay right. A random pick, not the 4-tuple hash the kernel uses without a
/// program: each connection is placed once (its later packets find its own socket), and a
/// retransmitted SYN landing elsewhere is harmless.
///
/// # Errors
/// What setsockopt(2) said (a kernel before 4.5 has no such option).
pub fn steer(socket: &impl std::os::fd::AsFd, keep: usize) -> io::Result<()> {
    use nix::libc;
    let keep = u32::try_from(keep.max(1)).unwrap_or(u32::MAX);
    // A = random; A = A % keep; return A. (SKF_AD_OFF + SKF_AD_RANDOM: an ancillary load.)
    let mut program = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: keep,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_A) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let fprog = libc::sock_fprog {
        len: 3,
        filter: program.as_mut_ptr(),
    };
    // The kernel copies the program during the call; `program` outlives it.
    nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::AttachReusePortCbpf,
        &fprog,
    )
    .map_err(io::Error::from)
}

/// Fails with EADDRINUSE when anything already listens on `addr`.
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR so that TIME_WAIT leftovers of an earlier run do not count as "in use".
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_freebind(&socket, addr)?;
    socket.bind(&addr.into())?;
    Ok(())
}

/// A listening socket. TCP_NODELAY and the keepalive settings are set here, once, because Linux
/// copies them to every socket accept(2) returns: one system call per listener instead of one or
/// two per connection.
fn listen_socket(addr: SocketAddr, config: &ListenerConfig) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // Like nginx's default `ipv6only=on`: "[::]:80" is IPv6 only; list "0.0.0.0:80" too.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    set_freebind(&socket, addr)?;
    socket.set_tcp_nodelay(config.tcp_nodelay)?;
    if let Some(idle) = config.tcp_keepalive {
        socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    socket.bind(&addr.into())?;
    // listen(2) takes an int; the configured range (≤ 65535) always fits.
    socket.listen(i32::try_from(config.backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// IP_FREEBIND: bind to an address this host does not have (yet), such as a VRRP virtual
/// address held by the other node; traffic arrives once the address is added here. No need for
/// `net.ipv4.ip_nonlocal_bind`.
fn set_freebind(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)
    } else {
        socket.set_freebind_v6(true)
    }
}

/// Applies the per-connection options to a socket ballast connected (accepted sockets inherit
/// them from the listening socket).
pub fn tune_stream(
    stream: &tokio::net::TcpStream,
    nodelay: bool,
    keepalive: Option<std::time::Duration>,
) -> io::Result<()> {
    stream.set_nodelay(nodelay)?;
    if let Some(idle) = keepalive {
        SockRef::from(stream).set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    Ok(())
}
