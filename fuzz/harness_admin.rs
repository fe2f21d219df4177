//! Fuzz target `admin_body`: one request body of the admin API through every parser that takes
//! one (`PATCH …/servers/{address}`, `POST …/servers`, `POST /api/v1/listeners`), and what a
//! body that passes becomes applied to a sample configuration and to its live upstreams, as the
//! API and a reload apply it.
//!
//! The same functions serve the API ([`ballast::admin::api`]); only the HTTP answer is missing.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use ballast::admin::api::{
    parse_add_listener, parse_add_server, parse_edit_server, with_listener, without_listener,
    AddListener, ListenerBodyError,
};
use ballast::config::{Config, Protocol};
use ballast::scheduler::PickContext;
use ballast::upstream::{Tried, Upstream};

/// A TCP listener over upstream `pool` (two primaries and a backup, weighted round robin) and an
/// HTTP listener over `api`, as an operator would run them.
const SAMPLE: &str = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:8080"
upstream = "pool"

[[listener]]
name = "site"
bind = "127.0.0.1:8081"
protocol = "http"
upstream = "api"

[[upstream]]
name = "pool"
scheduler = "wrr"
[[upstream.server]]
address = "127.0.0.1:9001"
weight = 3
[[upstream.server]]
address = "127.0.0.1:9002"
[[upstream.server]]
address = "127.0.0.1:9003"
backup = true

[[upstream]]
name = "api"
scheduler = "lc"
[[upstream.server]]
address = "127.0.0.1:9101"
"#;

fn sample() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config::from_str(SAMPLE, "sample.toml").expect("the sample is valid"))
}

/// Runs `data` as each kind of body.
pub(crate) fn body(data: &[u8]) {
    let config = sample();
    edit_server(config, data);
    add_server(config, data);
    add_listener(config, data);
    if let Ok(name) = std::str::from_utf8(data) {
        // `DELETE /api/v1/listeners/{name}` with any name.
        if let Ok(new) = without_listener(config, name) {
            assert_eq!(new.listeners.len() + 1, config.listeners.len());
        }
    }
}

/// Picks a few servers, as connections would, to see the scheduler cope with the new snapshot.
fn pick(u: &Upstream) {
    let snapshot = u.snapshot();
    for i in 0..4u8 {
        let ctx = PickContext {
            client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)),
            local: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        if let Some(guard) = u.select(&snapshot, &ctx, &Tried::new()) {
            assert!(guard.index() < snapshot.servers.len());
        }
    }
}

fn upstream(config: &Config, name: &str) -> Arc<Upstream> {
    let u = config.upstream(name).expect("the sample has it");
    Arc::new(Upstream::new(u.clone()))
}

/// `PATCH …/servers/{address}` on each server of `pool`.
fn edit_server(config: &Config, data: &[u8]) {
    let Ok(change) = parse_edit_server(data) else {
        return;
    };
    assert!(change.weight.is_some() || change.state.is_some());
    let u = upstream(config, "pool");
    for (index, s) in config.upstreams[0].servers.iter().enumerate() {
        if let Some(w) = change.weight {
            assert!(w <= 65535, "weight {w} passed");
            u.set_weight(s.address, w).expect("the server is there");
            assert_eq!(u.snapshot().servers[index].state.weight(), w);
        }
        if let Some(st) = change.state {
            u.set_server_state(index, st, "fuzz");
            assert_eq!(u.snapshot().servers[index].state.admin(), st);
        }
        pick(&u);
    }
}

/// `POST …/servers` to `pool` (a TCP upstream: added in place) and the same server in the
/// configuration of `api` (an HTTP upstream: refused by a reload).
fn add_server(config: &Config, data: &[u8]) {
    let Ok(server) = parse_add_server(data) else {
        return;
    };
    assert!(server.weight <= 65535);
    assert!(server.address.port() != 0 && !server.address.ip().is_unspecified());
    let u = upstream(config, "pool");
    let exists = config.upstreams[0]
        .servers
        .iter()
        .any(|s| s.address == server.address);
    match u.add_server(server.clone()) {
        Ok(_) => {
            assert!(!exists, "{} added twice", server.address);
            assert!(u.server_index(server.address).is_some());
            pick(&u);
            u.remove_server(server.address)
                .expect("an added server can be removed");
            assert!(u.server_index(server.address).is_none());
        }
        Err(_) => assert!(exists, "{} refused", server.address),
    }
    // The same server added by a reload, to the TCP upstream and to the HTTP one alike.
    for name in ["pool", "api"] {
        let mut new = config.clone();
        let Some(up) = new.upstreams.iter_mut().find(|x| x.name == name) else {
            continue;
        };
        if up.servers.iter().any(|s| s.address == server.address) {
            continue;
        }
        up.servers.push(server.clone());
        let (Some(before), Some(wanted)) = (config.upstream(name), new.upstream(name)) else {
            continue;
        };
        let u = upstream(config, name);
        let created = u.sync_servers(&before.servers, &wanted.servers);
        assert_eq!(created.len(), 1);
        pick(&u);
    }
}

/// `POST /api/v1/listeners`: parsed, validated as the file is, added to the configuration and
/// removed again.
fn add_listener(config: &Config, data: &[u8]) {
    let listener = match parse_add_listener(data) {
        Ok(l) => l,
        Err(ListenerBodyError::Invalid(problems)) => {
            assert!(!problems.is_empty());
            return;
        }
        Err(ListenerBodyError::Json(_)) => return,
    };
    // The body's strings reach the configuration parser quoted: none can break out of its value.
    let asked: AddListener = serde_json::from_slice(data).expect("it parsed once");
    assert_eq!(listener.name, asked.name);
    assert_eq!(listener.upstream, asked.upstream);
    assert_eq!(listener.protocol, Protocol::Tcp);
    let name = listener.name.clone();
    match with_listener(config, listener) {
        Ok(new) => {
            assert_eq!(new.listeners.len(), config.listeners.len() + 1);
            let back = without_listener(&new, &name).expect("it was just added");
            assert!(back.listeners == config.listeners);
        }
        Err(_) => assert!(
            config.listeners.iter().any(|l| l.name == name)
                || config.upstream(&asked.upstream).is_none()
        ),
    }
}
