//! Tests of the configuration pipeline: text in, exact diagnostics or the exact model out.
//!
//! Error cases are a table (hyper's `t!` style): each names its input and every line ballast must
//! print for it, position included. Helper macros expand to string literals so inputs can be built
//! with `concat!` and their line numbers read off directly: `listener!()` and `upstream!()` are four
//! lines each.

use std::net::SocketAddr;
use std::time::Duration;

use super::validate::{parse, Source};
use super::{
    defaults, AdminState, CheckKind, Config, ConnectionLimit, Global, HealthCheckConfig,
    HttpCheckConfig, HttpListenerConfig, HttpUpstreamConfig, ListenerConfig, LogFormat,
    PassiveConfig, Protocol, ServerConfig, UpstreamConfig, UpstreamHealthConfig,
};
use crate::scheduler::SchedulerKind;

/// A valid listener "web" → upstream "web" (lines 1-4 when first).
macro_rules! listener {
    () => {
        "[[listener]]\nname = \"web\"\nbind = \"0.0.0.0:80\"\nupstream = \"web\"\n"
    };
}

/// A valid upstream "web" with one server (four lines).
macro_rules! upstream {
    () => {
        "[[upstream]]\nname = \"web\"\n[[upstream.server]]\naddress = \"10.0.0.1:80\"\n"
    };
}

/// Every diagnostic for `input`, as printed.
fn errors(input: &str) -> Vec<String> {
    match parse(input, "ballast.toml") {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(diags) => diags.iter().map(ToString::to_string).collect(),
    }
}

fn config(input: &str) -> Config {
    match parse(input, "ballast.toml") {
        Ok(config) => config,
        Err(diags) => {
            let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
            panic!("expected a valid config, got:\n{}", lines.join("\n"))
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

macro_rules! t {
    ($name:ident, $input:expr, [$($expected:expr),+ $(,)?]) => {
        #[test]
        fn $name() {
            let expected: Vec<String> = vec![$($expected.to_owned()),+];
            assert_eq!(errors($input), expected, "input:\n{}", $input);
        }
    };
}

// === stage 1: syntax, types, unknown keys (first error only) ===

t!(
    syntax_error_is_reported_where_it_starts,
    "[[listener]]\nname = \"web\nbind = \"0.0.0.0:80\"\n",
    ["ballast.toml:2:12: invalid basic string, expected `\"`"]
);

t!(
    duplicate_key_names_the_key,
    concat!(listener!(), "name = \"api\"\n", upstream!()),
    ["ballast.toml:5:1: name: duplicate key"]
);

t!(
    unknown_key_lists_allowed_keys_and_guesses,
    concat!(listener!(), "bakclog = 4096\n", upstream!()),
    ["ballast.toml:5:1: listener[0].bakclog: unknown key; allowed: name, bind, protocol, upstream, \
      backlog, workers, tcp_nodelay, tcp_keepalive, idle_timeout, buffer_size, splice, \
      accept_proxy, certificate, route, header_timeout, forwarded, via, body_timeout, \
      send_timeout, max_header_size, max_headers, max_body_size, request_id_header, max_connections, resume_at, udp_timeout, max_flows, \
      responses; did you mean backlog?"]
);

t!(
    unknown_key_without_a_close_match_has_no_guess,
    concat!("[global]\ncolour = \"red\"\n", listener!(), upstream!()),
    ["ballast.toml:2:1: global.colour: unknown key; allowed: log_level, log_format, threads, shutdown_grace, max_connections, resume_at, access_log, access_log_format, user, group"]
);

t!(
    unknown_key_path_reaches_into_server_tables,
    concat!(
        listener!(),
        upstream!(),
        "[[upstream.server]]\naddress = \"10.0.0.2:80\"\nwieght = 2\n"
    ),
    [
        "ballast.toml:11:1: upstream[0].server[1].wieght: unknown key; allowed: address, weight, \
      max_connections, backup, check, check_port, state; did you mean weight?"
    ]
);

t!(
    unknown_key_path_reaches_into_inline_servers,
    concat!(
        listener!(),
        "[[upstream]]\nname = \"web\"\nserver = [ { address = \"10.0.0.1:80\", weigth = 2 } ]\n"
    ),
    [
        "ballast.toml:7:39: upstream[0].server[0].weigth: unknown key; allowed: address, weight, \
      max_connections, backup, check, check_port, state; did you mean weight?"
    ]
);

t!(
    unknown_top_level_table,
    concat!("[listeners]\n", upstream!()),
    ["ballast.toml:1:2: listeners: unknown key; allowed: global, listener, upstream, vrrp, admin; did you mean listener?"]
);

t!(
    wrong_type_string_for_integer,
    concat!(listener!(), upstream!(), "weight = \"3\"\n"),
    ["ballast.toml:9:10: upstream[0].server[0].weight: \"3\" is a string; expected an integer"]
);

t!(
    wrong_type_float_for_integer,
    concat!(listener!(), "backlog = 1e3\n", upstream!()),
    ["ballast.toml:5:11: listener[0].backlog: 1e3 is a float; expected an integer"]
);

t!(
    wrong_type_string_for_boolean,
    concat!(listener!(), upstream!(), "backup = \"yes\"\n"),
    ["ballast.toml:9:10: upstream[0].server[0].backup: \"yes\" is a string; expected a boolean (true or false)"]
);

t!(
    wrong_type_for_duration,
    concat!("[global]\nshutdown_grace = 1.5\n", listener!(), upstream!()),
    ["ballast.toml:2:18: global.shutdown_grace: 1.5 is a float; expected a duration with a unit, such as \"3s\""]
);

t!(
    wrong_type_date_for_string,
    "[[listener]]\nname = 1979-05-27\n",
    ["ballast.toml:2:8: listener[0].name: 1979-05-27 is a date-time; expected a string"]
);

t!(
    single_brackets_for_listener,
    concat!("[listener]\nname = \"web\"\n", upstream!()),
    ["ballast.toml:1:1: listener: found a table; expected an array of tables; write [[listener]], with double brackets"]
);

t!(
    single_brackets_for_server,
    concat!(
        listener!(),
        "[[upstream]]\nname = \"web\"\n[upstream.server]\naddress = \"10.0.0.1:80\"\n"
    ),
    [
        "ballast.toml:7:1: upstream[0].server: found a table; expected an array of tables; write \
      [[upstream.server]], with double brackets, or server = [ { address = \"…\" } ]"
    ]
);

t!(
    server_table_before_its_upstream,
    concat!(listener!(), "[[upstream.server]]\naddress = \"10.0.0.1:80\"\n"),
    ["ballast.toml:5:3: upstream: found a table; expected an array of tables; write [[upstream]], with \
      double brackets, before its [[upstream.server]] tables"]
);

t!(
    integer_beyond_64_bits,
    concat!(listener!(), "workers = 99999999999999999999\n", upstream!()),
    ["ballast.toml:5:11: listener[0].workers: 99999999999999999999 does not fit in a 64-bit integer"]
);

// === stage 2: values ===

t!(
    weight_out_of_range,
    concat!(listener!(), upstream!(), "weight = 70000\n"),
    ["ballast.toml:9:10: upstream[0].server[0].weight: 70000 is out of range; allowed: 0..=65535"]
);

t!(
    integer_ranges,
    concat!(
        "[global]\nthreads = 1025\n",
        listener!(),
        "backlog = 0\nworkers = 257\n",
        upstream!(),
        "max_connections = -1\n",
        "[[upstream]]\nname = \"api\"\nretries = 101\nserver = [ { address = \"10.0.0.2:80\" } ]\n",
    ),
    [
        "ballast.toml:2:11: global.threads: 1025 is out of range; allowed: 0..=1024",
        "ballast.toml:7:11: listener[0].backlog: 0 is out of range; allowed: 1..=65535",
        "ballast.toml:8:11: listener[0].workers: 257 is out of range; allowed: 0..=256",
        "ballast.toml:13:19: upstream[0].server[0].max_connections: -1 is out of range; allowed: 0..=4294967295",
        "ballast.toml:16:11: upstream[1].retries: 101 is out of range; allowed: 0..=100",
    ]
);

t!(
    listener_names_an_undefined_upstream,
    concat!(
        "[[listener]]\nname = \"web\"\nbind = \"0.0.0.0:80\"\nupstream = \"api\"\n",
        upstream!(),
        "[[upstream]]\nname = \"db\"\nserver = [ { address = \"10.0.0.2:5432\" } ]\n",
    ),
    ["ballast.toml:4:12: listener[0].upstream: no upstream named \"api\"; defined upstreams: \"web\", \"db\""]
);

t!(
    listener_names_an_upstream_when_none_exist,
    listener!(),
    ["ballast.toml:4:12: listener[0].upstream: no upstream named \"web\"; no [[upstream]] is defined"]
);

t!(
    duplicate_upstream_name,
    concat!(listener!(), upstream!(), upstream!()),
    ["ballast.toml:10:8: upstream[1].name: duplicate upstream name \"web\" (first defined at line 6)"]
);

t!(
    duplicate_listener_name_and_bind_address,
    concat!(listener!(), listener!(), upstream!()),
    [
        "ballast.toml:6:8: listener[1].name: duplicate listener name \"web\" (first defined at line 2)",
        "ballast.toml:7:8: listener[1].bind: 0.0.0.0:80 is already the bind address of listener[0] \
         (line 3); two listeners cannot share an address",
    ]
);

t!(
    duplicate_server_address,
    concat!(listener!(), upstream!(), "[[upstream.server]]\naddress = \"10.0.0.1:80\"\n"),
    ["ballast.toml:10:11: upstream[0].server[1].address: duplicate server address 10.0.0.1:80 in this \
      upstream (first defined at line 8)"]
);

t!(
    durations,
    concat!(
        "[global]\nshutdown_grace = 30\n",
        listener!(),
        "idle_timeout = \"ten minutes\"\ntcp_keepalive = \"40000s\"\n",
        upstream!(),
        "[[upstream]]\nname = \"api\"\nconnect_timeout = \"0s\"\nserver = [ { address = \"10.0.0.2:80\" } ]\n",
    ),
    [
        "ballast.toml:2:18: global.shutdown_grace: 30 has no unit; write a string with a unit, such as \
         \"30s\", \"250ms\" or \"10m\"",
        "ballast.toml:7:16: listener[0].idle_timeout: cannot parse \"ten minutes\" as a duration; expected \
         a number with a unit, such as \"250ms\", \"3s\", \"10m\"",
        "ballast.toml:8:17: listener[0].tcp_keepalive: \"40000s\" is out of range; allowed: 1s..=32767s",
        "ballast.toml:15:19: upstream[1].connect_timeout: \"0s\" is out of range; allowed: 1ms..=365d",
    ]
);

t!(
    addresses,
    concat!(
        "[[listener]]\nname = \"web\"\nbind = \"0.0.0.0\"\nupstream = \"web\"\n",
        "[[upstream]]\nname = \"web\"\nserver = [\n",
        "  { address = \"backend1:80\" },\n",
        "  { address = \"2001:db8::1:80\" },\n",
        "  { address = \"10.0.0.1:0\" },\n",
        "  { address = \"0.0.0.0:80\" },\n",
        "]\n",
    ),
    [
        "ballast.toml:3:8: listener[0].bind: cannot parse \"0.0.0.0\" as an address; expected IP:port, \
         such as \"0.0.0.0:80\" or \"[::]:443\"",
        "ballast.toml:8:15: upstream[0].server[0].address: cannot parse \"backend1:80\" as an address (host \
         names are not resolved; write an IP address); expected IP:port, such as \"0.0.0.0:80\" or \"[::]:443\"",
        "ballast.toml:9:15: upstream[0].server[1].address: cannot parse \"2001:db8::1:80\" as an address \
         (write IPv6 addresses in brackets, with the port after them); expected IP:port, such as \
         \"0.0.0.0:80\" or \"[::]:443\"",
        "ballast.toml:10:15: upstream[0].server[2].address: 10.0.0.1:0 has port 0, which cannot be \
         connected to; expected the server's port, such as \"10.0.0.1:80\"",
        "ballast.toml:11:15: upstream[0].server[3].address: 0.0.0.0 is the wildcard address, not a server; \
         expected the server's IP (127.0.0.1 or [::1] for this host)",
    ]
);

t!(
    enumerations,
    concat!(
        "[global]\nlog_level = \"warning\"\nlog_format = \"yaml\"\n",
        listener!(),
        "protocol = \"sctp\"\n",
        upstream!(),
        "[[upstream]]\nname = \"api\"\nscheduler = \"least\"\nserver = [ { address = \"10.0.0.2:80\" } ]\n",
    ),
    [
        "ballast.toml:2:13: global.log_level: \"warning\" is not a log level; allowed: off, error, warn, \
         info, debug, trace, or directives such as \"info,ballast=debug\"",
        "ballast.toml:3:14: global.log_format: \"yaml\" is not a log format; allowed: text, json",
        "ballast.toml:8:12: listener[0].protocol: \"sctp\" is not a supported protocol; allowed: tcp, \
         http, https, udp",
        "ballast.toml:15:13: upstream[1].scheduler: \"least\" is not a scheduler; allowed: rr, wrr, lc, \
         wlc, sh, dh, mh, random, p2c",
    ]
);

t!(
    log_filter_syntax,
    concat!("[global]\nlog_level = \"ballast=loud\"\n", listener!(), upstream!()),
    ["ballast.toml:2:13: global.log_level: cannot parse \"ballast=loud\" as a log filter: error parsing \
      level filter: expected one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\", or a number 0-5"]
);

t!(
    missing_required_keys_point_at_their_table,
    concat!(
        "[[listener]]\nbacklog = 128\n",
        "[[upstream]]\nserver = [ { weight = 2 } ]\n",
    ),
    [
        "ballast.toml:1:1: listener[0].name: missing required key; for example: name = \"web\"",
        "ballast.toml:1:1: listener[0].bind: missing required key; for example: bind = \"0.0.0.0:80\"",
        "ballast.toml:1:1: listener[0].upstream: missing required key; for example: upstream = \"web\"",
        "ballast.toml:3:1: upstream[0].name: missing required key; for example: name = \"web\"",
        "ballast.toml:4:12: upstream[0].server[0].address: missing required key; for example: address = \
         \"10.0.0.1:80\"",
    ]
);

t!(
    upstream_without_servers,
    concat!(listener!(), "[[upstream]]\nname = \"web\"\n\n[[upstream]]\nname = \"api\"\nserver = []\n"),
    [
        "ballast.toml:5:1: upstream[0].server: no servers; add at least one [[upstream.server]] with an address",
        "ballast.toml:8:1: upstream[1].server: no servers; add at least one [[upstream.server]] with an address",
    ]
);

t!(
    nothing_to_serve,
    upstream!(),
    ["ballast.toml:1:1: listener: nothing to serve: define at least one [[listener]]"]
);

t!(
    empty_file,
    "",
    ["ballast.toml:1:1: listener: nothing to serve: define at least one [[listener]]"]
);

t!(
    buffer_sizes,
    concat!(
        listener!(),
        "buffer_size = \"64KB\"\n",
        "[[listener]]\nname = \"b\"\nbind = \"0.0.0.0:81\"\nupstream = \"web\"\nbuffer_size = \"32MiB\"\n",
        "[[listener]]\nname = \"c\"\nbind = \"0.0.0.0:82\"\nupstream = \"web\"\nbuffer_size = 512\n",
        upstream!(),
    ),
    [
        "ballast.toml:5:15: listener[0].buffer_size: cannot parse \"64KB\" as a size; expected a number of \
         bytes with an optional binary unit (B, KiB, MiB, GiB), such as \"64KiB\", \"1MiB\" or 65536",
        "ballast.toml:10:15: listener[1].buffer_size: \"32MiB\" is out of range; allowed: 1KiB..=16MiB \
         (1024..=16777216 bytes)",
        "ballast.toml:15:15: listener[2].buffer_size: 512 is out of range; allowed: 1KiB..=16MiB \
         (1024..=16777216 bytes)",
    ]
);

t!(
    names_must_be_plain,
    concat!("[[listener]]\nname = \"my web\"\nbind = \"0.0.0.0:80\"\nupstream = \"web\"\n", upstream!()),
    ["ballast.toml:2:8: listener[0].name: \"my web\" is not a valid name; use 1 to 64 letters, digits, \
      '-', '_' or '.'"]
);

t!(
    columns_count_characters_not_bytes,
    concat!(listener!(), "[[upstream]]\nname = \"web\"\nserver = [ { address = \"ünï:80\", weight = 70000 } ]\n"),
    [
        "ballast.toml:7:24: upstream[0].server[0].address: cannot parse \"ünï:80\" as an address (host \
         names are not resolved; write an IP address); expected IP:port, such as \"0.0.0.0:80\" or \"[::]:443\"",
        "ballast.toml:7:43: upstream[0].server[0].weight: 70000 is out of range; allowed: 0..=65535",
    ]
);

// Problems come out in file order, whichever check found them: the undefined upstream (found by
// the cross-check, last) sits between two range errors (found first).
t!(
    several_errors_in_position_order,
    concat!(
        "[[upstream]]\nname = \"web\"\n[[upstream.server]]\naddress = \"10.0.0.1:80\"\nweight = -2\n\n",
        "[[listener]]\nname = \"web\"\nbind = \"0.0.0.0:80\"\nupstream = \"wbe\"\nbacklog = 70000\n\n",
        "[[upstream]]\nname = \"web\"\nconnect_timeout = \"3\"\nserver = [ { address = \"10.0.0.2:80\" } ]\n",
    ),
    [
        "ballast.toml:5:10: upstream[0].server[0].weight: -2 is out of range; allowed: 0..=65535",
        "ballast.toml:10:12: listener[0].upstream: no upstream named \"wbe\"; defined upstreams: \"web\"",
        "ballast.toml:11:11: listener[0].backlog: 70000 is out of range; allowed: 1..=65535",
        "ballast.toml:14:8: upstream[1].name: duplicate upstream name \"web\" (first defined at line 2)",
        "ballast.toml:15:19: upstream[1].connect_timeout: cannot parse \"3\" as a duration; expected a \
         number with a unit, such as \"250ms\", \"3s\", \"10m\"",
    ]
);

// === valid files ===

/// A file that sets every key, with both ways of writing servers; dense, so the corruption test
/// below spends its parses on values rather than comments.
const COMPLETE: &str = r#"
[global]
log_level = "info,ballast=debug"
log_format = "json"
threads = 8
shutdown_grace = "1m 30s"

[[listener]]
name = "web"
bind = "[::]:443"
protocol = "tcp"
upstream = "web"
backlog = 1024
workers = 4
tcp_nodelay = false
tcp_keepalive = "45s"
idle_timeout = "250ms"
buffer_size = "16KiB"
splice = false

[[upstream]]
name = "web"
scheduler = "mh"
connect_timeout = "1500ms"
retries = 0
tcp_keepalive = "2m"

[[upstream.server]]
address = "10.0.0.1:8080"
weight = 0
max_connections = 4294967295
backup = true

[[upstream.server]]
address = "[2001:db8::2]:8080"
weight = 65535

[[listener]]
name = "db"
bind = "10.0.0.10:5432"
upstream = "db"

[[upstream]]
name = "db"
max_fails = 2
fail_timeout = "5s"
slow_start = "10s"
inhibit_on_failure = true
sorry_server = "10.0.1.9:5432"
notify_up = "up.sh $2"
notify_down = "down.sh"
notify_timeout = "1s"
server = [ { address = "10.0.1.1:5432", weight = 2, check_port = 5433, state = "draining" }, { address = "10.0.1.2:5432", backup = true, check = false } ]

[upstream.health_check]
type = "http"
interval = "1s"
fast_interval = "100ms"
timeout = "500ms"
rise = 1
fall = 2
port = 8008
path = "/health"
host = "db.internal"
expect_status = [200, 204]
expect_body = "ok"
"#;

#[test]
fn complete_file_builds_the_expected_model() {
    let c = config(COMPLETE);
    let expected = Config {
        origin: "ballast.toml".to_owned(),
        global: Global {
            log_level: "info,ballast=debug".to_owned(),
            log_format: LogFormat::Json,
            threads: 8,
            shutdown_grace: Duration::from_secs(90),
            connections: ConnectionLimit {
                max: 0,
                resume_at: 100,
            },
            access_log: None,
            run_as: None,
        },
        listeners: vec![ListenerConfig {
            name: "web".to_owned(),
            bind: addr("[::]:443"),
            protocol: Protocol::Tcp,
            upstream: "web".to_owned(),
            backlog: 1024,
            workers: 4,
            tcp_nodelay: false,
            tcp_keepalive: Some(Duration::from_secs(45)),
            idle_timeout: Duration::from_millis(250),
            buffer_size: 16 * 1024,
            splice: false,
            accept_proxy: None,
            certificates: Vec::new(),
            routes: Vec::new(),
            http: HttpListenerConfig {
                header_timeout: defaults::HEADER_TIMEOUT,
                body_timeout: defaults::BODY_TIMEOUT,
                send_timeout: defaults::SEND_TIMEOUT,
                max_header_size: defaults::MAX_HEADER_SIZE,
                max_headers: defaults::MAX_HEADERS,
                max_body_size: defaults::MAX_BODY_SIZE,
                forwarded: false,
                via: false,
                request_id_header: defaults::REQUEST_ID_HEADER.to_owned(),
            },
            connections: ConnectionLimit::UNLIMITED,
            udp: crate::config::UdpListenerConfig::default(),
        }],
        vrrp: Vec::new(),
        upstreams: vec![UpstreamConfig {
            name: "web".to_owned(),
            scheduler: SchedulerKind::Maglev,
            connect_timeout: Duration::from_millis(1500),
            retries: 0,
            tcp_keepalive: Some(Duration::from_secs(120)),
            send_proxy: None,
            max_queue: 1024,
            queue_timeout: Duration::from_millis(1500),
            persistence: None,
            http: HttpUpstreamConfig {
                response_timeout: defaults::RESPONSE_TIMEOUT,
                keepalive_pool: defaults::KEEPALIVE_POOL,
                keepalive_timeout: defaults::SERVER_KEEPALIVE_TIMEOUT,
                http2: false,
                tls: None,
                sticky_cookie: None,
                retry_on: vec![super::RetryOn::Error, super::RetryOn::Timeout],
                retry_timeout: None,
            },
            health: UpstreamHealthConfig::default(),
            servers: vec![
                ServerConfig {
                    address: addr("10.0.0.1:8080"),
                    weight: 0,
                    max_connections: u32::MAX,
                    backup: true,
                    check: true,
                    check_port: None,
                    state: AdminState::Active,
                },
                ServerConfig {
                    address: addr("[2001:db8::2]:8080"),
                    weight: 65535,
                    max_connections: 0,
                    backup: false,
                    check: true,
                    check_port: None,
                    state: AdminState::Active,
                },
            ],
        }],
        admin: None,
    };
    assert_eq!(c.global, expected.global);
    assert_eq!(c.listeners[0], expected.listeners[0]);
    assert_eq!(c.upstreams[0], expected.upstreams[0]);
    assert_eq!(c.origin, expected.origin);
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.upstreams[1].servers.len(), 2);
    assert_eq!(c.upstreams[1].servers[0].weight, 2);
    assert!(c.upstreams[1].servers[1].backup);
    let db = &c.upstreams[1];
    assert_eq!(db.servers[0].check_port, Some(5433));
    assert_eq!(db.servers[0].state, AdminState::Draining);
    assert!(!db.servers[1].check);
    assert_eq!(db.health.passive.map(|p| p.max_fails), Some(2));
    assert_eq!(db.health.sorry_server, Some(addr("10.0.1.9:5432")));
    let check = db.health.check.as_ref().expect("db's check");
    assert_eq!(
        (check.kind, check.rise, check.fall, check.port),
        (CheckKind::Http, 1, 2, Some(8008))
    );
    assert_eq!(check.http.expect_status, [200, 204]);
}

#[test]
fn minimal_file_gets_every_default() {
    let c = config(concat!(listener!(), upstream!()));
    assert_eq!(c.origin, "ballast.toml");
    assert_eq!(c.global.log_level, defaults::LOG_LEVEL);
    assert_eq!(c.global.log_format, LogFormat::Text);
    assert_eq!(c.global.shutdown_grace, defaults::SHUTDOWN_GRACE);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(
        defaults::THREADS,
        0,
        "the default is one runtime thread per core"
    );
    assert_eq!(c.global.threads, cores.min(defaults::THREADS_MAX));

    let l = &c.listeners[0];
    assert_eq!(l.name, "web");
    assert_eq!(l.bind, addr("0.0.0.0:80"));
    assert_eq!(l.protocol, Protocol::Tcp);
    assert_eq!(l.upstream, "web");
    assert_eq!(l.backlog, defaults::BACKLOG);
    assert_eq!(defaults::WORKERS, 0, "the default is one worker per core");
    assert!(
        (1..=defaults::WORKERS_MAX).contains(&l.workers),
        "workers = 0 resolves to the core count"
    );
    assert_eq!(l.workers, cores.min(defaults::WORKERS_MAX));
    assert_eq!(l.tcp_nodelay, defaults::TCP_NODELAY);
    assert_eq!(l.tcp_keepalive, None);
    assert_eq!(l.idle_timeout, defaults::IDLE_TIMEOUT);
    assert_eq!(l.buffer_size, defaults::BUFFER_SIZE);
    assert_eq!(l.splice, defaults::SPLICE);

    let u = &c.upstreams[0];
    assert_eq!(u.name, "web");
    assert_eq!(u.scheduler, defaults::SCHEDULER);
    assert_eq!(u.connect_timeout, defaults::CONNECT_TIMEOUT);
    assert_eq!(u.retries, defaults::RETRIES);
    assert_eq!(u.tcp_keepalive, None);

    let s = &u.servers[0];
    assert_eq!(s.address, addr("10.0.0.1:80"));
    assert_eq!(s.weight, defaults::WEIGHT);
    assert_eq!(s.max_connections, 0);
    assert!(!s.backup);
}

#[test]
fn inline_servers_equal_server_tables() {
    let tables = concat!(
        listener!(),
        "[[upstream]]\nname = \"web\"\nscheduler = \"wrr\"\n",
        "[[upstream.server]]\naddress = \"10.0.0.1:80\"\nweight = 3\n",
        "[[upstream.server]]\naddress = \"[fd00::2]:80\"\nmax_connections = 10\nbackup = true\n",
    );
    let inline = concat!(
        listener!(),
        "[[upstream]]\nname = \"web\"\nscheduler = \"wrr\"\nserver = [\n",
        "  { address = \"10.0.0.1:80\", weight = 3 },\n",
        "  { address = \"[fd00::2]:80\", max_connections = 10, backup = true },\n",
        "]\n",
    );
    assert_eq!(config(tables), config(inline));
}

#[test]
fn ipv6_addresses() {
    let c = config(concat!(
        "[[listener]]\nname = \"v6\"\nbind = \"[::]:8443\"\nupstream = \"v6\"\n",
        "[[listener]]\nname = \"v6-local\"\nbind = \"[::1]:8443\"\nupstream = \"v6\"\n",
        "[[upstream]]\nname = \"v6\"\nserver = [ { address = \"[2001:db8::10]:443\" }, { address = \"[::1]:9443\" } ]\n",
    ));
    assert_eq!(c.listeners[0].bind, addr("[::]:8443"));
    assert_eq!(c.listeners[1].bind, addr("[::1]:8443"));
    assert_eq!(
        c.upstreams[0].servers[0].address,
        addr("[2001:db8::10]:443")
    );
    assert_eq!(c.upstreams[0].servers[1].address, addr("[::1]:9443"));
}

#[test]
fn buffer_size_spellings() {
    let cases: &[(&str, usize)] = &[
        ("\"16KiB\"", 16 * 1024),
        ("\"16 KiB\"", 16 * 1024),
        ("\"16kib\"", 16 * 1024),
        ("\"1MiB\"", 1024 * 1024),
        ("\"16MiB\"", 16 * 1024 * 1024),
        ("\"65536\"", 65536),
        ("\"2048B\"", 2048),
        ("65536", 65536),
        ("1024", 1024),
    ];
    for (spelling, bytes) in cases {
        let text = format!("{}buffer_size = {spelling}\n{}", listener!(), upstream!());
        assert_eq!(
            config(&text).listeners[0].buffer_size,
            *bytes,
            "buffer_size = {spelling}"
        );
    }
}

#[test]
fn duration_spellings() {
    let cases: &[(&str, Duration)] = &[
        ("250ms", Duration::from_millis(250)),
        ("3s", Duration::from_secs(3)),
        ("10m", Duration::from_secs(600)),
        ("1h 30m", Duration::from_secs(5400)),
        ("2days", Duration::from_secs(2 * 86400)),
    ];
    for (spelling, duration) in cases {
        let text = format!(
            "{}idle_timeout = \"{spelling}\"\n{}",
            listener!(),
            upstream!()
        );
        assert_eq!(
            config(&text).listeners[0].idle_timeout,
            *duration,
            "idle_timeout = {spelling:?}"
        );
    }
}

#[test]
fn explicit_workers_are_kept_and_port_zero_binds_may_repeat() {
    let c = config(concat!(
        "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:0\"\nupstream = \"web\"\nworkers = 256\n",
        "[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:0\"\nupstream = \"web\"\nworkers = 1\n",
        upstream!(),
    ));
    assert_eq!(c.listeners[0].workers, 256);
    assert_eq!(c.listeners[1].workers, 1);
}

#[test]
fn example_file_validates() {
    let c = config(include_str!("../../examples/ballast.toml"));
    let names: Vec<&str> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["web", "pg-replicas"]);
    let web = c.upstream("web").expect("upstream web");
    assert_eq!(web.scheduler, SchedulerKind::WeightedLeastConn);
    assert_eq!(web.servers.iter().filter(|s| s.backup).count(), 1);
    let pg = c.upstream("pg-replicas").expect("upstream pg-replicas");
    assert_eq!(pg.scheduler, SchedulerKind::LeastConn);
    assert_eq!(pg.servers.len(), 2);
}

#[test]
fn docs_show_the_example_file_verbatim() {
    let docs = include_str!("../../docs/config.md");
    let example = include_str!("../../examples/ballast.toml");
    assert!(
        docs.contains(&format!("```toml\n{example}```")),
        "docs/config.md's worked example differs from examples/ballast.toml"
    );
}

#[test]
fn docs_error_example_is_what_ballast_prints() {
    let docs = include_str!("../../docs/config.md");
    let after = |marker: &str, from: usize| {
        let start = docs[from..].find(marker).expect(marker) + from + marker.len();
        let end = docs[start..].find("```").expect("closing fence") + start;
        (&docs[start..end], end)
    };
    let (input, end) = after("For example, this file:\n\n```toml\n", 0);
    let (output, _) = after("```text\n", end);
    let printed = Config::from_str(input, "ballast.toml")
        .expect_err("the docs' bad file")
        .to_string();
    assert_eq!(printed, output.trim_end());
}

#[test]
fn config_error_lists_every_diagnostic_on_its_own_line() {
    let err = Config::from_str(
        concat!(listener!(), "backlog = 0\nworkers = 999\n"),
        "x.toml",
    )
    .expect_err("invalid");
    assert_eq!(err.diagnostics().len(), 3);
    assert_eq!(
        err.to_string(),
        "x.toml:4:12: listener[0].upstream: no upstream named \"web\"; no [[upstream]] is defined\n\
         x.toml:5:11: listener[0].backlog: 0 is out of range; allowed: 1..=65535\n\
         x.toml:6:11: listener[0].workers: 999 is out of range; allowed: 0..=256"
    );
}

#[test]
fn positions_are_one_based_characters() {
    let src = Source {
        text: "ab\nçé=1\n\u{feff}",
        origin: "t",
    };
    assert_eq!(src.position(0), (1, 1));
    assert_eq!(src.position(2), (1, 3));
    assert_eq!(src.position(3), (2, 1));
    assert_eq!(src.position(7), (2, 3), "after two 2-byte characters");
    assert_eq!(
        src.position(4),
        (2, 1),
        "inside a character: clamped to its start"
    );
    assert_eq!(src.position(1000), (3, 1), "past the end: clamped");
    let bom = Source {
        text: "\u{feff}a = 1",
        origin: "t",
    };
    assert_eq!(bom.position(3), (1, 1), "a byte-order mark is not a column");
}

// === robustness ===

/// Every diagnostic must be well formed, whatever the input.
fn assert_sane(text: &str) {
    if let Err(diags) = parse(text, "fuzz.toml") {
        assert!(
            !diags.is_empty(),
            "an error without a diagnostic for {text:?}"
        );
        let lines = text.split('\n').count();
        for d in &diags {
            assert!(
                d.line >= 1 && d.line <= lines && d.column >= 1,
                "{d} for {text:?}"
            );
            assert!(!d.message.is_empty(), "empty message for {text:?}");
        }
    }
}

#[test]
fn truncated_files_never_panic() {
    let text = include_str!("../../examples/ballast.toml");
    for end in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
        assert_sane(&text[..end]);
    }
}

#[test]
fn corrupted_files_never_panic() {
    // Every character of a dense file replaced by three of a few troublemakers, rotating, so
    // neighbouring positions see all of them: a few thousand parses, a few seconds in a debug
    // build.
    let replacements = ['"', '[', ']', '=', '\n', '{', ',', '0', '-', 'é', '\0'];
    for (i, (at, old)) in COMPLETE.char_indices().enumerate() {
        for k in 0..3 {
            let c = replacements[(i + 4 * k) % replacements.len()];
            let mut corrupted = String::with_capacity(COMPLETE.len() + 4);
            corrupted.push_str(&COMPLETE[..at]);
            corrupted.push(c);
            corrupted.push_str(&COMPLETE[at + old.len_utf8()..]);
            assert_sane(&corrupted);
        }
    }
}

// === HTTP keys ===

t!(
    routes_on_a_tcp_listener_are_an_error,
    concat!(listener!(), "[[listener.route]]\npath = \"/x\"\nupstream = \"web\"\n", upstream!()),
    ["ballast.toml:5:1: listener[0].route[0]: routes need protocol = \"http\"; a tcp listener sends \
      everything to its upstream"]
);

t!(
    bad_routes_are_each_reported,
    concat!(
        listener!(),
        "protocol = \"http\"\nrequest_id_header = \"x request\"\n",
        "[[listener.route]]\nhost = \"api.example.com:80\"\npath_prefix = \"v1\"\nupstream = \"api\"\n",
        "[[listener.route]]\npath_prefix = \"/a\"\npath = \"/b\"\nupstream = \"web\"\n",
        upstream!()
    ),
    [
        "ballast.toml:6:21: listener[0].request_id_header: \"x request\" is not a valid header \
         name; allowed: letters, digits and !#$%&'*+-.^_`|~",
        "ballast.toml:8:8: listener[0].route[0].host: \"api.example.com:80\" is not a host name; \
         allowed: a host name such as \"api.example.com\" or \"*.example.com\", without port",
        "ballast.toml:9:15: listener[0].route[0].path_prefix: \"v1\" is not a path; it must start \
         with \"/\" and contain no spaces",
        "ballast.toml:10:12: listener[0].route[0].upstream: no upstream named \"api\"; defined \
         upstreams: \"web\"",
        "ballast.toml:13:8: listener[0].route[1].path: give either path_prefix or path, not both \
         (path_prefix at line 12)",
    ]
);

#[test]
fn http_listener_with_routes_builds_the_model() {
    let c = config(concat!(
        listener!(),
        "protocol = \"http\"\nforwarded = true\nheader_timeout = \"5s\"\n",
        "[[listener.route]]\nhost = \"*.Example.com\"\npath = \"/x\"\nupstream = \"web\"\nhost_rewrite = \"in\"\n",
        "[[upstream]]\nname = \"web\"\nkeepalive_pool = 0\nresponse_timeout = \"2s\"\n",
        "server = [{ address = \"10.0.0.1:80\" }]\n",
    ));
    let l = &c.listeners[0];
    assert_eq!(l.protocol, Protocol::Http);
    assert!(l.http.forwarded);
    assert_eq!(l.http.header_timeout, Duration::from_secs(5));
    assert_eq!(
        l.routes,
        vec![super::RouteConfig {
            host: Some("*.example.com".to_owned()),
            path: Some(super::PathMatch::Exact("/x".to_owned())),
            upstream: "web".to_owned(),
            host_rewrite: Some("in".to_owned()),
        }]
    );
    let u = &c.upstreams[0];
    assert_eq!(u.http.keepalive_pool, 0);
    assert_eq!(u.http.response_timeout, Duration::from_secs(2));
}

t!(
    https_needs_a_certificate_and_http_takes_none,
    concat!(
        listener!(),
        "protocol = \"https\"\n",
        "[[listener]]\nname = \"b\"\nbind = \"0.0.0.0:81\"\nupstream = \"web\"\nprotocol = \"http\"\n",
        "[[listener.certificate]]\ncert_file = \"a.pem\"\n",
        upstream!()
    ),
    [
        "ballast.toml:1:1: listener[0].certificate: an https listener needs at least one \
         [[listener.certificate]] with cert_file and key_file",
        "ballast.toml:11:1: listener[1].certificate[0]: certificates need protocol = \"https\"",
    ]
);

#[test]
fn certificate_paths_are_relative_to_the_config_file() {
    let text = concat!(
        listener!(),
        "protocol = \"https\"\n[[listener.certificate]]\ncert_file = \"tls/site.pem\"\n",
        "key_file = \"/abs/site.key\"\nserver_names = [\"www.example.com\", \"*.example.org\"]\n",
        upstream!()
    );
    let c = match parse(text, "/etc/ballast/ballast.toml") {
        Ok(c) => c,
        Err(d) => panic!("{d:?}"),
    };
    let cert = &c.listeners[0].certificates[0];
    assert_eq!(
        cert.cert_file,
        std::path::Path::new("/etc/ballast/tls/site.pem")
    );
    assert_eq!(cert.key_file, std::path::Path::new("/abs/site.key"));
    assert_eq!(cert.server_names, ["www.example.com", "*.example.org"]);
}

t!(
    upstream_tls_keys_need_tls_and_do_not_contradict,
    concat!(
        listener!(),
        "[[upstream]]\nname = \"web\"\ntls_server_name = \"a.test\"\n",
        "server = [{ address = \"10.0.0.1:80\" }]\n",
        "[[upstream]]\nname = \"b\"\ntls = true\ntls_ca_file = \"ca.pem\"\ntls_verify = false\n",
        "server = [{ address = \"10.0.0.1:80\" }]\n",
    ),
    [
        "ballast.toml:7:19: upstream[0].tls_server_name: has no effect without tls = true",
        "ballast.toml:12:15: upstream[1].tls_ca_file: give tls_ca_file or tls_verify = false, not both",
    ]
);

// === server states: health checks, passive checks, slow start, sorry server, notify ===

#[test]
fn health_keys_build_the_model() {
    let c = config(concat!(
        listener!(),
        "[[upstream]]\nname = \"web\"\nmax_fails = 5\nfail_timeout = \"30s\"\nslow_start = \"1m\"\n",
        "inhibit_on_failure = true\nsorry_server = \"10.0.9.9:80\"\nnotify_up = \"/bin/up.sh\"\n",
        "notify_down = \"/bin/down.sh\"\nnotify_timeout = \"3s\"\n",
        "[upstream.health_check]\ntype = \"http\"\ninterval = \"1s\"\nfast_interval = \"200ms\"\n",
        "timeout = \"500ms\"\nrise = 1\nfall = 2\nport = 8081\npath = \"/healthz?full=1\"\n",
        "host = \"app.internal:8080\"\nexpect_status = [200, 204]\nexpect_body = \"ok\"\n",
        "[[upstream.server]]\naddress = \"10.0.0.1:80\"\ncheck_port = 9000\nstate = \"draining\"\n",
        "[[upstream.server]]\naddress = \"10.0.0.2:80\"\ncheck = false\nstate = \"disabled\"\n",
    ));
    let u = &c.upstreams[0];
    assert_eq!(
        u.health,
        UpstreamHealthConfig {
            check: Some(HealthCheckConfig {
                kind: CheckKind::Http,
                interval: Duration::from_secs(1),
                fast_interval: Duration::from_millis(200),
                timeout: Duration::from_millis(500),
                rise: 1,
                fall: 2,
                port: Some(8081),
                http: HttpCheckConfig {
                    path: "/healthz?full=1".to_owned(),
                    host: Some("app.internal:8080".to_owned()),
                    expect_status: vec![200, 204],
                    expect_body: Some("ok".to_owned()),
                },
                udp: crate::config::UdpCheckConfig {
                    query_name: ".".to_owned(),
                    ..Default::default()
                },
            }),
            passive: Some(PassiveConfig {
                max_fails: 5,
                fail_timeout: Duration::from_secs(30),
            }),
            slow_start: Some(Duration::from_secs(60)),
            inhibit_on_failure: true,
            sorry_server: Some(addr("10.0.9.9:80")),
            notify_up: Some("/bin/up.sh".to_owned()),
            notify_down: Some("/bin/down.sh".to_owned()),
            notify_timeout: Duration::from_secs(3),
        }
    );
    assert_eq!(u.servers[0].check_port, Some(9000));
    assert!(u.servers[0].check);
    assert_eq!(u.servers[0].state, AdminState::Draining);
    assert!(!u.servers[1].check);
    assert_eq!(u.servers[1].state, AdminState::Disabled);
}

#[test]
fn health_check_defaults_are_haproxys() {
    let c = config(concat!(
        listener!(),
        upstream!(),
        "[upstream.health_check]\n"
    ));
    let check = c.upstreams[0].health.check.clone().expect("a check");
    assert_eq!(check.kind, CheckKind::Tcp);
    assert_eq!(check.interval, Duration::from_secs(2));
    assert_eq!(check.fast_interval, check.interval);
    assert_eq!(check.timeout, check.interval);
    assert_eq!((check.rise, check.fall), (2, 3));
    assert_eq!(check.port, None);
    assert_eq!(check.http.path, "/");
    assert!(check.http.expect_status.is_empty());
    let none = config(concat!(listener!(), upstream!()));
    assert_eq!(none.upstreams[0].health, UpstreamHealthConfig::default());
    assert_eq!(none.upstreams[0].servers[0].state, AdminState::Active);
}

t!(
    health_check_unknown_key_names_its_table,
    concat!(listener!(), upstream!(), "[upstream.health_check]\nintervall = \"1s\"\n"),
    ["ballast.toml:10:1: upstream[0].health_check.intervall: unknown key; allowed: type, interval, \
      fast_interval, timeout, rise, fall, port, path, host, expect_status, expect_body, send, expect, query_name; did you mean interval?"]
);

t!(
    health_values_out_of_range,
    concat!(
        listener!(),
        "[[upstream]]\nname = \"web\"\nmax_fails = -1\nslow_start = \"0s\"\nsorry_server = \"10.0.0.1\"\n",
        "notify_up = \" \"\n",
        "[upstream.health_check]\ntype = \"icmp\"\ninterval = \"1ms\"\nrise = 0\nfall = 1001\nport = 70000\n",
        "[[upstream.server]]\naddress = \"10.0.0.1:80\"\nstate = \"maintenance\"\ncheck_port = 0\n",
    ),
    [
        "ballast.toml:7:13: upstream[0].max_fails: -1 is out of range; allowed: 0..=1000",
        "ballast.toml:8:14: upstream[0].slow_start: \"0s\" is out of range; allowed: 1ms..=365d",
        "ballast.toml:9:16: upstream[0].sorry_server: cannot parse \"10.0.0.1\" as an address; expected \
         IP:port, such as \"0.0.0.0:80\" or \"[::]:443\"",
        "ballast.toml:10:13: upstream[0].notify_up: an empty command; give a shell command such as \
         \"/etc/ballast/notify.sh\", or remove the key",
        "ballast.toml:12:8: upstream[0].health_check.type: \"icmp\" is not a check type; allowed: tcp, http, tls, udp, dns",
        "ballast.toml:13:12: upstream[0].health_check.interval: \"1ms\" is out of range; allowed: 10ms..=1h",
        "ballast.toml:14:8: upstream[0].health_check.rise: 0 is out of range; allowed: 1..=1000",
        "ballast.toml:15:8: upstream[0].health_check.fall: 1001 is out of range; allowed: 1..=1000",
        "ballast.toml:16:8: upstream[0].health_check.port: 70000 is out of range; allowed: 1..=65535",
        "ballast.toml:19:9: upstream[0].server[0].state: \"maintenance\" is not a server state; allowed: \
         active, draining, disabled",
        "ballast.toml:20:14: upstream[0].server[0].check_port: 0 is out of range; allowed: 1..=65535",
    ]
);

t!(
    health_keys_that_would_do_nothing_are_errors,
    concat!(
        listener!(),
        "[[upstream]]\nname = \"web\"\nfail_timeout = \"5s\"\nnotify_timeout = \"1s\"\n",
        "[[upstream.server]]\naddress = \"10.0.0.1:80\"\ncheck = false\ncheck_port = 81\n",
        "[[upstream]]\nname = \"b\"\nserver = [{ address = \"10.0.0.1:80\" }]\n",
        "[upstream.health_check]\npath = \"/x\"\nexpect_status = []\nexpect_body = \"\"\n",
    ),
    [
        "ballast.toml:7:16: upstream[0].fail_timeout: has no effect without max_fails (1 or more)",
        "ballast.toml:8:18: upstream[0].notify_timeout: has no effect without notify_up or notify_down",
        "ballast.toml:11:9: upstream[0].server[0].check: has no effect without an [upstream.health_check] \
         table in this upstream",
        "ballast.toml:12:14: upstream[0].server[0].check_port: has no effect without an \
         [upstream.health_check] table in this upstream",
        "ballast.toml:17:8: upstream[1].health_check.path: has no effect unless type = \"http\"",
        "ballast.toml:18:17: upstream[1].health_check.expect_status: has no effect unless type = \"http\"",
        "ballast.toml:18:17: upstream[1].health_check.expect_status: an empty list accepts nothing; list \
         the statuses that mean healthy, such as [200]",
        "ballast.toml:19:15: upstream[1].health_check.expect_body: has no effect unless type = \"http\"",
        "ballast.toml:19:15: upstream[1].health_check.expect_body: an empty string matches every body; \
         remove the key or give the text to look for",
    ]
);

// === connection limits ===

t!(
    connection_limits_are_range_checked_and_resume_at_needs_a_limit,
    concat!(
        "[global]\nmax_connections = -1\nresume_at = 0\n",
        listener!(),
        "max_connections = 20000000\n",
        "[[listener]]\nname = \"api\"\nbind = \"0.0.0.0:81\"\nupstream = \"web\"\nresume_at = 90\n",
        upstream!()
    ),
    [
        "ballast.toml:2:19: global.max_connections: -1 is out of range; allowed: 0..=10000000",
        "ballast.toml:3:13: global.resume_at: 0 is out of range; allowed: 1..=100",
        "ballast.toml:8:19: listener[0].max_connections: 20000000 is out of range; allowed: \
         0..=10000000",
        "ballast.toml:13:13: listener[1].resume_at: has no effect without max_connections; add \
         max_connections = 1000",
    ]
);

#[test]
fn connection_limits_default_to_derived_globally_and_none_per_listener() {
    let c = config(concat!(listener!(), upstream!()));
    assert_eq!(c.global.connections, ConnectionLimit::UNLIMITED);
    assert_eq!(c.listeners[0].connections, ConnectionLimit::UNLIMITED);
    let c = config(concat!(
        "[global]\nmax_connections = 5000\nresume_at = 80\n",
        listener!(),
        "max_connections = 100\nresume_at = 90\n",
        upstream!()
    ));
    let g = c.global.connections;
    assert_eq!((g.max, g.resume_at, g.low_water()), (5000, 80, 4000));
    let l = c.listeners[0].connections;
    assert_eq!((l.max, l.resume_at, l.low_water()), (100, 90, 90));
}
