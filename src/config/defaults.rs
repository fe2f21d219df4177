//! Every default of the configuration, in one place. `docs/config.md` lists the same values.

use std::time::Duration;

use crate::scheduler::SchedulerKind;

/// `global.log_level`.
pub const LOG_LEVEL: &str = "info";
/// `global.shutdown_grace`: 30 s.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// `global.threads`: 0 = one per CPU core the process may run on.
pub const THREADS: usize = 0;
/// Largest `global.threads` accepted.
pub const THREADS_MAX: usize = 1024;
/// Longest duration accepted for any key (365 days), so that deadline arithmetic such as
/// `Instant::now() + d` can never overflow.
pub const DURATION_MAX: Duration = Duration::from_secs(365 * 24 * 3600);
/// Shortest `tcp_keepalive` accepted: TCP_KEEPIDLE counts whole seconds, from 1 (tcp(7)).
pub const TCP_KEEPALIVE_MIN: Duration = Duration::from_secs(1);
/// Longest `tcp_keepalive` accepted: the kernel's `MAX_TCP_KEEPIDLE`, 32767 s (tcp(7)).
pub const TCP_KEEPALIVE_MAX: Duration = Duration::from_secs(32767);
/// `listener.backlog`: 4096, the kernel's default `net.core.somaxconn` since Linux 5.4
/// (nginx's 511 is truncated nowhere but overflows early on busy hosts).
pub const BACKLOG: u32 = 4096;
/// Largest `listener.backlog` accepted.
pub const BACKLOG_MAX: u32 = 65535;
/// `listener.workers`: 0 = one per CPU core.
pub const WORKERS: usize = 0;
/// Largest `listener.workers` accepted.
pub const WORKERS_MAX: usize = 256;
/// `listener.tcp_nodelay`.
pub const TCP_NODELAY: bool = true;
/// `listener.idle_timeout`: 10 min, nginx's `proxy_timeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// `listener.buffer_size`: 256 KiB per direction at most. Buffers start at 16 KiB and grow only
/// while a connection moves bulk data, so most connections never use more than 2 × 16 KiB.
pub const BUFFER_SIZE: usize = 256 * 1024;
/// Smallest `listener.buffer_size` accepted.
pub const BUFFER_SIZE_MIN: usize = 1024;
/// Largest `listener.buffer_size` accepted.
pub const BUFFER_SIZE_MAX: usize = 16 * 1024 * 1024;
/// `upstream.scheduler`: `wlc`, the LVS default.
pub const SCHEDULER: SchedulerKind = SchedulerKind::WeightedLeastConn;
/// `upstream.connect_timeout`: 3 s.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// `upstream.retries`: 3, HAProxy's default.
pub const RETRIES: u32 = 3;
/// Largest `upstream.retries` accepted.
pub const RETRIES_MAX: u32 = 100;
/// `server.weight`.
pub const WEIGHT: u32 = 1;
/// Largest `server.weight` accepted (the ipvsadm range).
pub const WEIGHT_MAX: u32 = 65535;
/// `listener.splice`.
pub const SPLICE: bool = true;
/// `listener.header_timeout`: 60 s, nginx's `client_header_timeout`.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// `listener.request_id_header`.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// `upstream.response_timeout`: 60 s, nginx's `proxy_read_timeout`.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// `upstream.keepalive_pool`: idle connections kept per server.
pub const KEEPALIVE_POOL: usize = 32;
/// Largest `upstream.keepalive_pool` accepted.
pub const KEEPALIVE_POOL_MAX: usize = 65535;
/// `upstream.keepalive_timeout`: 60 s, nginx's upstream `keepalive_timeout`.
pub const SERVER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// `listener.max_header_size`: 32 KiB (nginx: 4 × 8 KiB `large_client_header_buffers`).
pub const MAX_HEADER_SIZE: usize = 32 * 1024;
/// Smallest `listener.max_header_size` accepted (hyper's floor).
pub const MAX_HEADER_SIZE_MIN: usize = 8 * 1024;
/// Largest `listener.max_header_size` accepted.
pub const MAX_HEADER_SIZE_MAX: usize = 1024 * 1024;
/// `listener.max_headers`: 100 (Envoy's `max_headers_count`, HAProxy's 101).
pub const MAX_HEADERS: usize = 100;
/// Largest `listener.max_headers` accepted.
pub const MAX_HEADERS_MAX: usize = 1000;
/// `listener.max_body_size`: 0 = unlimited (HAProxy's behaviour; nginx defaults to 1 MiB).
pub const MAX_BODY_SIZE: u64 = 0;
/// Largest `listener.max_body_size` accepted: 1 TiB.
pub const MAX_BODY_SIZE_MAX: usize = 1 << 40;
/// `listener.body_timeout`: 60 s, nginx's `client_body_timeout`.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// `listener.send_timeout`: 60 s, nginx's `send_timeout`.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// `persistence_max_entries` default: about 20 MB of table at most.
pub const PERSISTENCE_MAX_ENTRIES: u64 = 262_144;
/// `persistence_max_entries` ceiling.
pub const PERSISTENCE_MAX_ENTRIES_MAX: u64 = 16_777_216;

/// `health_check.type`: a TCP connect, Keepalived's `TCP_CHECK`, HAProxy's plain `check`.
pub const CHECK_KIND: crate::config::CheckKind = crate::config::CheckKind::Tcp;
/// `health_check.interval`: 2 s, HAProxy's `inter` (Keepalived's `delay_loop` is 60 s, too slow
/// to notice a dead server before clients do).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Shortest `health_check.interval`, `fast_interval` and `timeout` accepted.
pub const CHECK_INTERVAL_MIN: Duration = Duration::from_millis(10);
/// Longest `health_check.interval`, `fast_interval` and `timeout` accepted.
pub const CHECK_INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// `health_check.rise`: 2, HAProxy's default.
pub const CHECK_RISE: u32 = 2;
/// `health_check.fall`: 3, HAProxy's default.
pub const CHECK_FALL: u32 = 3;
/// Largest `rise`, `fall` and `max_fails` accepted.
pub const CHECK_COUNT_MAX: u32 = 1000;
/// `health_check.path`.
pub const CHECK_PATH: &str = "/";
/// `upstream.fail_timeout`: 10 s, nginx's default.
pub const FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// `upstream.notify_timeout`: 10 s.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// `upstream.max_queue`: 1024 waiting connections or requests.
pub const MAX_QUEUE: i64 = 1024;
/// `upstream.max_queue` ceiling.
pub const MAX_QUEUE_MAX: i64 = 1 << 20;

/// `global.max_connections` / `listener.max_connections`: the largest value accepted.
pub const MAX_CONNECTIONS_MAX: u64 = 10_000_000;
/// `global.max_connections` when derived from the file-descriptor limit: at most this many
/// (half of systemd's default hard `LimitNOFILE`, 524288), so that a host with a huge or
/// unlimited hard limit does not get a limit no memory could back.
pub const MAX_CONNECTIONS_DERIVED_CAP: u64 = 262_144;
/// `resume_at`: 100 % = resume accepting as soon as one connection ends (HAProxy's behaviour).
pub const RESUME_AT: u8 = 100;

/// `listener.udp_timeout`: 300 s, IPVS's UDP timeout (`ipvsadm --set`). nginx's `proxy_timeout`
/// (10 min) would keep a server socket per client twice as long for traffic that rarely needs it;
/// request/response protocols such as DNS should set `responses` instead.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(300);
/// `listener.max_flows`: flows per UDP listener (each holds one socket).
pub const MAX_FLOWS: usize = 65536;
/// Largest `listener.max_flows` accepted.
pub const MAX_FLOWS_MAX: usize = 4_194_304;
/// Largest `listener.responses` accepted.
pub const RESPONSES_MAX: u32 = 1_000_000;
/// `health_check.query_name` (dns): the root, which every resolver can answer.
pub const CHECK_QUERY_NAME: &str = ".";

/// `admin.bind`: 127.0.0.1:8404, HAProxy's conventional stats port (9090 is Prometheus' own).
pub const ADMIN_BIND: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8404);
