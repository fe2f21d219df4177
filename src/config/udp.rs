//! The validated model of the UDP keys: a UDP listener's flow settings and what a `udp` or `dns`
//! health check sends and expects. Kept apart from `mod.rs` so the UDP additions stay in one
//! place; `validate_udp.rs` fills them in.

use std::time::Duration;

use super::defaults;

/// Flow settings of a `protocol = "udp"` listener (see [`crate::proxy::udp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpListenerConfig {
    /// `udp_timeout`: a flow with no datagram in either direction for this long is closed and
    /// its server socket released. Default: 300 s, IPVS's UDP timeout (`ipvsadm --set … udp`).
    pub timeout: Duration,
    /// `max_flows`: most flows open at once on this listener (all workers together). A new
    /// client arriving at a full table evicts the least recently used flow of its worker.
    /// Default: 65536.
    pub max_flows: usize,
    /// `responses`: after this many datagrams from the server per datagram from the client, the
    /// flow closes at once (nginx `proxy_responses`), so the client's next datagram is scheduled
    /// afresh. `None` = flows end only by `udp_timeout` (default).
    pub responses: Option<u32>,
}

impl Default for UdpListenerConfig {
    fn default() -> UdpListenerConfig {
        UdpListenerConfig {
            timeout: defaults::UDP_TIMEOUT,
            max_flows: defaults::MAX_FLOWS,
            responses: None,
        }
    }
}

/// What a `udp` or `dns` check sends and expects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UdpCheckConfig {
    /// `send`: the datagram a `udp` check sends (`\xHH` escapes give any byte). Default: empty.
    pub send: Vec<u8>,
    /// `expect`: bytes the reply of a `udp` check must contain. `None` = any reply will do.
    pub expect: Option<Vec<u8>>,
    /// `query_name`: the name a `dns` check asks for (type A, class IN). Default: `.`.
    pub query_name: String,
}
