//! File descriptors: how many the connection limits need, the default `[global]
//! max_connections` derived from RLIMIT_NOFILE, and raising the soft limit at start.
//!
//! Counting: one proxied client connection holds two descriptors (the client's socket and the
//! server's), so the limits need about `2 × max_connections` plus what ballast holds regardless
//! ([`fixed`]): one listening socket per worker, idle kept-alive server connections of HTTP
//! upstreams (`keepalive_pool` per server), and [`SLACK`] for everything else (the epoll and
//! event descriptors of the runtime, stdio, netlink queries, certificate files being read).
//!
//! The default global limit is derived the way HAProxy derives `maxconn` from `ulimit -n`: as
//! many connections as the *hard* limit can hold, `(hard − fixed) / 2`, at most
//! [`defaults::MAX_CONNECTIONS_DERIVED_CAP`]. It exists so that at the edge of the descriptor
//! budget ballast stops accepting (clients wait in the accept queue) rather than accepting and
//! then failing the connect to the server with EMFILE (the client is reset).
//!
//! At start the soft limit is raised to min(hard, needed) (setrlimit(2); raising the soft limit
//! up to the hard one needs no privilege). When the hard limit is below what the limits need,
//! ballast says so once, with the numbers and the fix; it runs anyway.

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

use crate::config::{defaults, Config};

/// Descriptors kept free for what is not a listener or a connection.
pub const SLACK: u64 = 64;

/// The descriptor budget of a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The global `max_connections` in force: configured, or derived from the hard limit.
    pub max_connections: u64,
    /// Whether `max_connections` was derived (not configured).
    pub derived: bool,
    /// Most connections that can be open at once: the global limit, or the sum of the
    /// listeners' limits when every listener has one and that sum is lower.
    pub connections: u64,
    /// Descriptors needed: `2 × connections + fixed`.
    pub needed: u64,
}

/// Descriptors ballast holds whatever the load: listening sockets, idle pooled server
/// connections of HTTP upstreams, and [`SLACK`].
pub fn fixed(cfg: &Config) -> u64 {
    let listening: u64 = cfg.listeners.iter().map(|l| l.workers.max(1) as u64).sum();
    let pooled: u64 = if cfg.listeners.iter().any(|l| l.protocol.is_http()) {
        cfg.upstreams
            .iter()
            .map(|u| (u.http.keepalive_pool as u64).saturating_mul(u.servers.len() as u64))
            .fold(0, u64::saturating_add)
    } else {
        0
    };
    listening.saturating_add(pooled).saturating_add(SLACK)
}

/// The budget of `cfg` under a hard RLIMIT_NOFILE of `hard` (`None` = unlimited).
pub fn budget(cfg: &Config, hard: Option<u64>) -> Budget {
    let fixed = fixed(cfg);
    let configured = cfg.global.connections.max;
    let (max_connections, derived) = if configured > 0 {
        (configured, false)
    } else {
        let fits = hard.map_or(u64::MAX, |h| h.saturating_sub(fixed) / 2);
        (fits.clamp(1, defaults::MAX_CONNECTIONS_DERIVED_CAP), true)
    };
    let per_listener: Option<u64> = cfg
        .listeners
        .iter()
        .map(|l| (l.connections.max > 0).then_some(l.connections.max))
        .try_fold(0u64, |sum, m| m.map(|m| sum.saturating_add(m)));
    let connections = per_listener.map_or(max_connections, |sum| sum.min(max_connections));
    Budget {
        max_connections,
        derived,
        connections,
        needed: connections.saturating_mul(2).saturating_add(fixed),
    }
}

/// RLIMIT_NOFILE of this process: (soft, hard), `None` for unlimited.
///
/// # Errors
/// What getrlimit(2) said.
pub fn current() -> nix::Result<(Option<u64>, Option<u64>)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let finite = |v: u64| (v != RLIM_INFINITY).then_some(v);
    Ok((finite(soft), finite(hard)))
}

/// What [`raise`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// The soft limit already allowed `needed`.
    Enough {
        /// The soft limit (`None` = unlimited).
        soft: Option<u64>,
    },
    /// The soft limit was raised to `to`, which covers what is needed.
    Raised {
        /// The soft limit before.
        from: u64,
        /// The soft limit now.
        to: u64,
    },
    /// The hard limit is below what is needed; the soft limit is now the hard limit.
    Short {
        /// The soft limit before.
        from: u64,
        /// The hard limit, which the soft limit now equals.
        hard: u64,
    },
}

/// Raises the soft RLIMIT_NOFILE to min(hard, `needed`) when it is below `needed`; never lowers it.
///
/// # Errors
/// What getrlimit(2) or setrlimit(2) said.
pub fn raise(needed: u64) -> nix::Result<Raised> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft == RLIM_INFINITY || soft >= needed {
        return Ok(Raised::Enough {
            soft: (soft != RLIM_INFINITY).then_some(soft),
        });
    }
    let to = if hard == RLIM_INFINITY {
        needed
    } else {
        needed.min(hard)
    };
    if to > soft {
        setrlimit(Resource::RLIMIT_NOFILE, to, hard)?;
    }
    if to < needed {
        Ok(Raised::Short { from: soft, hard })
    } else {
        Ok(Raised::Raised { from: soft, to })
    }
}

/// The operator's fix when the hard limit is `hard` and `needed` descriptors are needed.
pub fn advice(budget: &Budget, hard: u64) -> String {
    let fixed = budget
        .needed
        .saturating_sub(budget.connections.saturating_mul(2));
    let fits = hard.saturating_sub(fixed) / 2;
    format!(
        "RLIMIT_NOFILE hard limit {hard} is below the {} file descriptors {} connections need \
         (2 per proxied connection, plus listening sockets and reserve): raise it (`ulimit -n {}` \
         before starting ballast, or `LimitNOFILE={}` in its systemd unit), or lower \
         max_connections to {fits}",
        budget.needed, budget.connections, budget.needed, budget.needed
    )
}

/// At start: raises the soft limit for `cfg` and logs what it did; warns once when the hard limit
/// is too low. Returns the budget.
pub fn apply(cfg: &Config) -> Budget {
    let hard = current().ok().and_then(|(_, h)| h);
    let b = budget(cfg, hard);
    match raise(b.needed) {
        Ok(Raised::Enough { soft }) => tracing::debug!(
            soft = soft.map_or_else(|| "unlimited".to_owned(), |s| s.to_string()),
            needed = b.needed,
            max_connections = b.max_connections,
            "RLIMIT_NOFILE is enough"
        ),
        Ok(Raised::Raised { from, to }) => tracing::info!(
            from,
            to,
            max_connections = b.max_connections,
            derived = b.derived,
            "raised the RLIMIT_NOFILE soft limit from {from} to {to} for max_connections {}",
            b.max_connections
        ),
        Ok(Raised::Short { from, hard }) => {
            tracing::warn!(from, hard, needed = b.needed, "{}", advice(&b, hard));
        }
        Err(e) => tracing::warn!(error = %e, needed = b.needed,
            "cannot raise RLIMIT_NOFILE to the {} file descriptors the connection limits need",
            b.needed),
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(global: &str, listeners: &[(&str, u32)]) -> Config {
        let mut text = format!("[global]\n{global}\n");
        for (i, (extra, workers)) in listeners.iter().enumerate() {
            text.push_str(&format!(
                "[[listener]]\nname = \"l{i}\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\
                 workers = {workers}\n{extra}\n"
            ));
        }
        text.push_str(
            "[[upstream]]\nname = \"u\"\n[[upstream.server]]\naddress = \"127.0.0.1:9\"\n",
        );
        Config::from_str(&text, "t.toml").expect("valid")
    }

    #[test]
    fn the_default_limit_is_what_the_hard_limit_holds() {
        let c = cfg("", &[("", 2), ("", 2)]);
        assert_eq!(fixed(&c), 4 + SLACK);
        let b = budget(&c, Some(20_000));
        assert_eq!(b.max_connections, (20_000 - 68) / 2);
        assert!(b.derived);
        assert!(b.needed <= 20_000);
        // Unlimited or huge hard limits are capped.
        assert_eq!(
            budget(&c, None).max_connections,
            defaults::MAX_CONNECTIONS_DERIVED_CAP
        );
        // A hard limit too small for even the listeners still allows one connection.
        assert_eq!(budget(&c, Some(10)).max_connections, 1);
    }

    #[test]
    fn a_configured_limit_is_kept_and_counted_twice() {
        let c = cfg("max_connections = 5000", &[("", 1)]);
        let b = budget(&c, Some(1024));
        assert_eq!((b.max_connections, b.derived), (5000, false));
        assert_eq!(b.needed, 2 * 5000 + 1 + SLACK);
    }

    #[test]
    fn listener_limits_bound_the_need_only_when_every_listener_has_one() {
        let c = cfg(
            "max_connections = 5000",
            &[("max_connections = 100", 1), ("max_connections = 200", 1)],
        );
        assert_eq!(budget(&c, None).connections, 300);
        let c = cfg(
            "max_connections = 5000",
            &[("max_connections = 100", 1), ("", 1)],
        );
        assert_eq!(budget(&c, None).connections, 5000);
    }

    #[test]
    fn pooled_server_connections_count_for_http_listeners() {
        let c = cfg("", &[("protocol = \"http\"", 1)]);
        assert_eq!(fixed(&c), 1 + defaults::KEEPALIVE_POOL as u64 + SLACK);
    }

    #[test]
    fn the_advice_names_the_numbers_and_the_fix() {
        let c = cfg("max_connections = 5000", &[("", 1)]);
        let b = budget(&c, Some(4096));
        let a = advice(&b, 4096);
        assert!(a.contains("hard limit 4096"), "{a}");
        assert!(a.contains("ulimit -n 10065"), "{a}");
        assert!(a.contains("LimitNOFILE=10065"), "{a}");
        assert!(a.contains("max_connections to 2015"), "{a}");
    }
}
