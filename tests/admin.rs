//! The admin API, `/metrics` and `ballast ctl`, against real runtimes, backends and HTTP clients
//! on 127.0.0.1 ephemeral ports.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use ballast::admin::client::Client;
use ballast::config::{AdminBind, Config};
use ballast::runtime::Runtime;
use common::{Backend, PATIENCE};
use http::{Method, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "0123456789abcdef-test-token";

fn admin_addr(rt: &Runtime) -> SocketAddr {
    match rt.admin_bind() {
        Some(AdminBind::Tcp(a)) => *a,
        other => panic!("admin should listen on TCP, got {other:?}"),
    }
}

/// A TCP listener over two servers, persistence with a /24 mask, and an HTTP listener over a
/// second upstream; the admin API on 127.0.0.1:0 with a token.
fn two_services(a: SocketAddr, b: SocketAddr, c: SocketAddr) -> String {
    format!(
        r#"[admin]
bind = "127.0.0.1:0"
token = "{TOKEN}"

[[listener]]
name = "l"
bind = "127.0.0.1:0"
upstream = "u"
workers = 2

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
upstream = "h"
workers = 1

[[upstream]]
name = "u"
scheduler = "rr"
persistence_timeout = "300s"
persistence_granularity = "255.255.255.0"
[[upstream.server]]
address = "{a}"
[[upstream.server]]
address = "{b}"
weight = 2

[[upstream]]
name = "h"
scheduler = "wrr"
[[upstream.server]]
address = "{c}"
"#
    )
}

async fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, bytes) = client
        .request(method, path, body.as_ref())
        .await
        .expect("the admin API answers");
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v)
}

fn server(upstream: &Value, addr: SocketAddr) -> &Value {
    upstream["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["address"] == addr.to_string()))
        .unwrap_or_else(|| panic!("no server {addr} in {upstream}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_and_changes_need_the_token() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let mut rt = common::start(&two_services(a.addr, b.addr, c.addr)).await;
    let admin = AdminBind::Tcp(admin_addr(&rt));
    let open = Client::new(admin.clone(), None);
    let wrong = Client::new(admin.clone(), Some("not-the-token-at-all".into()));
    let ok = Client::new(admin, Some(TOKEN.into()));
    // Traffic, so counters move.
    let l = rt.listener_addr("l").expect("l");
    for _ in 0..4 {
        common::who(l).await;
    }

    // Reads are open on loopback.
    let (s, v) = call(&open, Method::GET, "/api/v1/status", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["listeners"], 2);
    assert_eq!(v["servers"], 3);
    assert!(v["vrrp"].is_null());
    let (s, v) = call(&open, Method::GET, "/api/v1/listeners", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v[0]["name"], "l");
    assert_eq!(v[0]["accepted"], 4);
    assert_eq!(v[0]["persistence_secs"], 300);
    let queues = v[0]["accept_queue"].as_array().expect("accept queues");
    assert_eq!(queues.len(), 2, "one per worker: {v}");
    assert!(queues[0]["max"].is_number(), "{v}");
    assert!(v[1]["http"]["responses"]["2xx"].is_number());
    let (s, v) = call(&open, Method::GET, "/api/v1/listeners/l", None).await;
    assert_eq!((s, v["upstream"].clone()), (StatusCode::OK, json!("u")));
    let (s, _) = call(&open, Method::GET, "/api/v1/listeners/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = call(&open, Method::GET, "/api/v1/upstreams", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v[0]["editable"], true);
    assert_eq!(
        v[1]["editable"], true,
        "h serves an HTTP listener, and is editable too"
    );
    let (s, v) = call(&open, Method::GET, "/api/v1/upstreams/u", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["persistence"]["entries"], 1, "one /24 client");
    let sa = server(&v, a.addr);
    assert_eq!(
        (sa["status"].clone(), sa["weight"].clone()),
        (json!("up"), json!(1))
    );
    let total: u64 = v["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| s["connections"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 4);
    let (s, v) = call(&open, Method::GET, "/api/v1/upstreams/u/servers", None).await;
    assert_eq!((s, v.as_array().map(Vec::len)), (StatusCode::OK, Some(2)));
    let path_b = format!("/api/v1/upstreams/u/servers/{}", b.addr);
    let (s, v) = call(&open, Method::GET, &path_b, None).await;
    assert_eq!((s, v["weight"].clone()), (StatusCode::OK, json!(2)));
    let (s, _) = call(
        &open,
        Method::GET,
        "/api/v1/upstreams/u/servers/127.0.0.1:1",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&open, Method::GET, "/api/v1/vrrp", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Changes: refused without the token and with a wrong one.
    let weight = Some(json!({ "weight": 5 }));
    for (who, client) in [("no token", &open), ("wrong token", &wrong)] {
        let (s, v) = call(client, Method::PATCH, &path_b, weight.clone()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{who}: {v}");
        let (s, _) = call(client, Method::POST, &format!("{path_b}/drain"), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{who}");
        let (s, _) = call(client, Method::POST, "/api/v1/reload", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{who}");
    }
    let (_, v) = call(&open, Method::GET, &path_b, None).await;
    assert_eq!(v["weight"], 2, "nothing changed");

    // ipvsadm -e -w
    let (s, v) = call(&ok, Method::PATCH, &path_b, weight).await;
    assert_eq!(
        (s, v["weight"].clone(), v["effective_weight"].clone()),
        (StatusCode::OK, json!(5), json!(5))
    );
    let (s, _) = call(
        &ok,
        Method::PATCH,
        &path_b,
        Some(json!({ "weight": 70000 })),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(
        &ok,
        Method::PATCH,
        &path_b,
        Some(json!({ "state": "sideways" })),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(&ok, Method::PATCH, &path_b, Some(json!({ "wieght": 1 }))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown keys are refused");
    // drain, disable, enable
    for (action, status) in [
        ("drain", "draining"),
        ("disable", "disabled"),
        ("enable", "up"),
    ] {
        let (s, v) = call(&ok, Method::POST, &format!("{path_b}/{action}"), None).await;
        assert_eq!(
            (s, v["status"].clone()),
            (StatusCode::OK, json!(status)),
            "{action}"
        );
    }
    // While b is drained, every new connection goes to a.
    call(&ok, Method::POST, &format!("{path_b}/drain"), None).await;
    for _ in 0..3 {
        assert_eq!(common::who(l).await, "a");
    }
    call(&ok, Method::POST, &format!("{path_b}/enable"), None).await;

    // ipvsadm -a / -d
    let d = Backend::start("d").await;
    let (s, v) = call(
        &ok,
        Method::POST,
        "/api/v1/upstreams/u/servers",
        Some(json!({ "address": d.addr.to_string(), "weight": 3 })),
    )
    .await;
    assert_eq!(
        (s, v["weight"].clone()),
        (StatusCode::CREATED, json!(3)),
        "{v}"
    );
    let (s, _) = call(
        &ok,
        Method::POST,
        "/api/v1/upstreams/u/servers",
        Some(json!({ "address": d.addr.to_string() })),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "already a member");
    let (s, _) = call(
        &ok,
        Method::POST,
        "/api/v1/upstreams/u/servers",
        Some(json!({ "address": "nowhere" })),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The new server takes connections: drain the others.
    call(
        &ok,
        Method::POST,
        &format!("/api/v1/upstreams/u/servers/{}/drain", a.addr),
        None,
    )
    .await;
    call(&ok, Method::POST, &format!("{path_b}/drain"), None).await;
    assert_eq!(common::who(l).await, "d");
    let (s, v) = call(
        &ok,
        Method::DELETE,
        &format!("/api/v1/upstreams/u/servers/{}", d.addr),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = call(
        &ok,
        Method::DELETE,
        &format!("/api/v1/upstreams/u/servers/{}", d.addr),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // HTTP upstreams: membership too (the pools follow their servers).
    let (s, v) = call(
        &ok,
        Method::POST,
        "/api/v1/upstreams/h/servers",
        Some(json!({ "address": "127.0.0.1:9" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(
        &ok,
        Method::DELETE,
        "/api/v1/upstreams/h/servers/127.0.0.1:9",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = call(
        &ok,
        Method::DELETE,
        &format!("/api/v1/upstreams/h/servers/{}", c.addr),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "the last server of h stays");
    let (s, _) = call(
        &ok,
        Method::POST,
        &format!("/api/v1/upstreams/h/servers/{}/drain", c.addr),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // ipvsadm -A / -D: carried out by whoever runs the runtime, here this test.
    let mut reloads = rt.take_reload_requests().expect("reload requests");
    let (s, v) = call(&ok, Method::POST, "/api/v1/listeners", Some(json!({}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = call(
        &ok,
        Method::POST,
        "/api/v1/listeners",
        Some(json!({ "name": "x", "bind": "nowhere", "upstream": "u", "workers": 99999 })),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(2),
        "every problem: {v}"
    );
    let (s, _) = call(&ok, Method::PATCH, "/api/v1/listeners/l", Some(json!({}))).await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
    let (s, _) = call(&open, Method::POST, "/api/v1/listeners", Some(json!({}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    call(
        &ok,
        Method::POST,
        &format!("/api/v1/upstreams/u/servers/{}/enable", a.addr),
        None,
    )
    .await;
    let add = {
        let ok = ok.clone();
        tokio::spawn(async move {
            call(
                &ok,
                Method::POST,
                "/api/v1/listeners",
                Some(json!({ "name": "added", "bind": "127.0.0.1:0", "upstream": "u" })),
            )
            .await
        })
    };
    let request = tokio::time::timeout(PATIENCE, reloads.recv())
        .await
        .expect("in time")
        .expect("a request");
    rt.answer(request).await;
    let (s, v) = add.await.expect("added");
    assert_eq!(
        (s, v["name"].clone(), v["workers"].clone()),
        (StatusCode::CREATED, json!("added"), json!(1)),
        "{v}"
    );
    let added: SocketAddr = v["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("address");
    assert_eq!(common::who(added).await, "a");
    let remove = {
        let ok = ok.clone();
        tokio::spawn(
            async move { call(&ok, Method::DELETE, "/api/v1/listeners/added", None).await },
        )
    };
    let request = tokio::time::timeout(PATIENCE, reloads.recv())
        .await
        .expect("in time")
        .expect("a request");
    rt.answer(request).await;
    let (s, v) = remove.await.expect("removed");
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(rt.listener_addr("added").is_none());
    assert!(
        tokio::net::TcpStream::connect(added).await.is_err(),
        "it stopped accepting"
    );

    // Reload: forwarded to whoever runs the runtime.
    let answer = tokio::spawn(async move {
        let r = reloads.recv().await.expect("a reload request");
        let _ = r
            .reply
            .send(Err(vec!["test.toml:1:1: refused for the test".into()]));
    });
    let (s, v) = call(&ok, Method::POST, "/api/v1/reload", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["problems"][0], "test.toml:1:1: refused for the test");
    answer.await.expect("answered");

    // The page is served without a token, and is self-contained.
    let (s, page) = open.request(Method::GET, "/", None).await.expect("page");
    assert_eq!(s, StatusCode::OK);
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("data-status"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no outside fetches"
    );
    rt.shutdown(PATIENCE).await;
}

#[test]
fn a_non_loopback_admin_bind_without_a_token_is_a_config_error() {
    let text = "[admin]\nbind = \"0.0.0.0:8404\"\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\n[[upstream]]\nname = \"u\"\n[[upstream.server]]\naddress = \"127.0.0.1:1\"\n";
    let err = Config::from_str(text, "t.toml").expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.starts_with("t.toml:2:8: admin.bind: 0.0.0.0:8404 is reachable from other hosts"),
        "{msg}"
    );
    let with_token = text.replace(
        "[admin]\n",
        "[admin]\ntoken_file = \"/etc/ballast/admin.token\"\n",
    );
    Config::from_str(&with_token, "t.toml").expect("a token makes it valid");
    let short = text.replace("[admin]\n", "[admin]\ntoken = \"short\"\n");
    let msg = Config::from_str(&short, "t.toml")
        .expect_err("too short")
        .to_string();
    assert!(msg.contains("admin.token: is too short"), "{msg}");
    let unix = text.replace("0.0.0.0:8404", "unix:/run/ballast.sock");
    let cfg = Config::from_str(&unix, "t.toml").expect("a unix socket is local");
    assert_eq!(
        cfg.admin.map(|a| a.bind),
        Some(AdminBind::Unix("/run/ballast.sock".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_on_a_unix_socket() {
    let a = Backend::start("a").await;
    let dir = std::env::temp_dir().join(format!("ballast-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("admin.sock");
    let text = common::config("rr", &common::servers(&[(a.addr, 1)]), "", "")
        + &format!("\n[admin]\nbind = \"unix:{}\"\n", sock.display());
    let rt = common::start(&text).await;
    let client = Client::new(AdminBind::Unix(sock.clone()), None);
    let (s, v) = call(
        &client,
        Method::POST,
        &format!("/api/v1/upstreams/u/servers/{}/drain", a.addr),
        None,
    )
    .await;
    assert_eq!(
        (s, v["status"].clone()),
        (StatusCode::OK, json!("draining")),
        "no token configured: open to the host"
    );
    rt.shutdown(PATIENCE).await;
    assert!(!sock.exists(), "the socket file is removed at shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

fn python_has_prometheus_client() -> bool {
    Command::new("python3")
        .args(["-c", "import prometheus_client.parser"])
        .status()
        .is_ok_and(|s| s.success())
}

fn skip(what: &str) {
    assert!(
        std::env::var("CI").is_err(),
        "{what} is missing, and CI is set: .ci/run installs it"
    );
    eprintln!("SKIPPED: {what} is missing (pip install prometheus-client); .ci/run installs it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_with_the_prometheus_text_parser() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        common::killable::Killable::start("c", common::killable::Kind::Http).await,
    );
    let rt = common::start(&two_services(a.addr, b.addr, c.addr)).await;
    let l = rt.listener_addr("l").expect("l");
    for _ in 0..3 {
        common::who(l).await;
    }
    let mut http = common::killable::Client::connect(rt.listener_addr("web").expect("web")).await;
    for _ in 0..2 {
        let (s, _, _) = http.get("/", None).await.expect("answer");
        assert_eq!(s, StatusCode::OK);
    }
    let client = Client::new(AdminBind::Tcp(admin_addr(&rt)), None);
    let (s, body) = client
        .request(Method::GET, "/metrics", None)
        .await
        .expect("metrics");
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&body).into_owned();
    for line in [
        "ballast_listener_connections_total{listener=\"l\"} 3",
        "ballast_http_responses_total{listener=\"web\",class=\"2xx\"} 2",
        "ballast_http_request_duration_seconds_count{listener=\"web\"} 2",
        &format!(
            "ballast_server_up{{upstream=\"u\",server=\"{}\"}} 1",
            a.addr
        ),
        &format!(
            "ballast_server_weight{{upstream=\"u\",server=\"{}\"}} 2",
            b.addr
        ),
        "ballast_upstream_persistence_entries{upstream=\"u\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        text.contains("ballast_listener_accept_queue_max{listener=\"l\",worker=\"1\"}"),
        "{text}"
    );
    if !python_has_prometheus_client() {
        return skip("python3 prometheus_client");
    }
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
fams = list(text_string_to_metric_families(sys.stdin.read()))
for f in fams:
    print(f.name, f.type, len(f.samples))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("python3 ran");
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed = String::from_utf8_lossy(&out.stdout);
    // The parser strips `_total` from counter family names.
    for fam in [
        "ballast_listener_connections counter",
        "ballast_http_request_duration_seconds histogram",
        "ballast_server_active_connections gauge",
        "ballast_server_up gauge",
        "ballast_http_responses counter",
    ] {
        assert!(
            parsed.lines().any(|l| l.starts_with(fam)),
            "{fam} not parsed:\n{parsed}"
        );
    }
    rt.shutdown(PATIENCE).await;
}

/// Replaces every `127.0.0.1:PORT` with `127.0.0.1:P<n>`, numbering ports in order of
/// appearance, so the golden file does not depend on ephemeral ports.
fn normalise_ports(text: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("127.0.0.1:") {
        let (before, after) = rest.split_at(i + "127.0.0.1:".len());
        out.push_str(before);
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        let n = match seen.iter().position(|p| *p == digits) {
            Some(n) => n,
            None => {
                seen.push(digits.clone());
                seen.len() - 1
            }
        };
        out.push_str(&format!("P{n}"));
        rest = &after[digits.len()..];
    }
    out.push_str(rest);
    out
}

fn ctl(admin: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ballast"))
        .arg("ctl")
        .arg("--admin")
        .arg(admin.to_string())
        .args(args)
        .env_remove("BALLAST_TOKEN")
        .output()
        .expect("ballast ctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_list_matches_the_golden_file_and_ctl_changes_servers() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let rt = common::start(&two_services(a.addr, b.addr, c.addr)).await;
    let admin = admin_addr(&rt);
    let token = format!("--token={TOKEN}");
    // Changes through ctl.
    let (ok, _, err) = ctl(admin, &["drain", "u", &b.addr.to_string()]);
    assert!(!ok && err.contains("401"), "no token: refused: {err}");
    let (ok, out, err) = ctl(admin, &[&token, "drain", "u", &b.addr.to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains("status draining"), "{out}");
    let (ok, _, err) = ctl(
        admin,
        &[&token, "set-weight", "u", &a.addr.to_string(), "4"],
    );
    assert!(ok, "{err}");
    let d = Backend::start("d").await;
    let (ok, _, err) = ctl(
        admin,
        &[
            &token,
            "add-server",
            "u",
            &d.addr.to_string(),
            "--weight",
            "2",
        ],
    );
    assert!(ok, "{err}");
    // An upstream an HTTP listener uses takes new servers and gives them up again.
    let (ok, _, err) = ctl(admin, &[&token, "add-server", "h", &d.addr.to_string()]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(admin, &[&token, "remove-server", "h", &d.addr.to_string()]);
    assert!(ok, "{err}");
    common::who(rt.listener_addr("l").expect("l")).await;

    let (ok, out, err) = ctl(admin, &["list"]);
    assert!(ok, "{err}");
    let got = normalise_ports(&out);
    let golden_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/ctl_list.txt");
    if std::env::var_os("BALLAST_BLESS").is_some() {
        std::fs::write(golden_path, &got).expect("write golden");
    }
    let golden = std::fs::read_to_string(golden_path).expect("golden file");
    assert_eq!(
        got, golden,
        "ctl list output differs from {golden_path} (BALLAST_BLESS=1 rewrites it)"
    );

    let (ok, out, err) = ctl(admin, &["list", "--stats"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Conns     Reqs   Errors  InBytes OutBytes"),
        "{out}"
    );
    let (ok, out, err) = ctl(admin, &["list", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        v["upstreams"][0]["servers"].as_array().map(Vec::len),
        Some(3)
    );
    let (ok, _, err) = ctl(admin, &[&token, "remove-server", "u", &d.addr.to_string()]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(admin, &[&token, "enable", "u", &b.addr.to_string()]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(admin, &[&token, "disable", "u", &b.addr.to_string()]);
    assert!(ok, "{err}");
    let (ok, out, err) = ctl(admin, &["list", "--rate"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("CPS      RPS    ErrPS    InBPS   OutBPS"),
        "{out}"
    );
    rt.shutdown(PATIENCE).await;
}

/// Every path of the OpenAPI description is in the endpoint table of `src/admin/mod.rs`, and the
/// other way round.
#[test]
fn the_openapi_description_and_the_endpoint_table_agree() {
    let root = env!("CARGO_MANIFEST_DIR");
    let yaml = std::fs::read_to_string(format!("{root}/docs/admin-api.yaml")).expect("yaml");
    let module = std::fs::read_to_string(format!("{root}/src/admin/mod.rs")).expect("mod.rs");
    let normalise = |p: &str| {
        p.replace("{upstream}", "{name}")
            .replace("{server}", "{address}")
    };
    let documented: std::collections::BTreeSet<String> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("  /"))
        .filter_map(|l| l.strip_suffix(':'))
        .map(|p| normalise(&format!("/{p}")))
        .collect();
    let table: std::collections::BTreeSet<String> = module
        .lines()
        .filter_map(|l| l.strip_prefix("//! | "))
        .filter_map(|l| l.split(" | ").nth(1))
        .filter_map(|p| {
            p.trim()
                .strip_prefix('`')?
                .strip_suffix('`')
                .map(str::to_owned)
        })
        .filter(|p| p.starts_with('/'))
        .map(|p| normalise(&p))
        .collect();
    assert!(documented.len() > 10, "{documented:?}");
    assert_eq!(documented, table);
}

#[tokio::test]
async fn vrrp_instances_are_shown_in_the_api_and_the_metrics() {
    // An interface that does not exist: the instance runs (and waits for it) without touching
    // the host's network, so this needs no root.
    let text = r#"[admin]
bind = "127.0.0.1:0"

[vrrp]
[[vrrp.instance]]
name = "VI_9"
interface = "ballast-none0"
virtual_router_id = 9
priority = 90
advert_int = "1s"
virtual_ipaddress = ["192.0.2.9/24"]
"#;
    let cfg = Config::from_str(text, "vrrp.toml").expect("valid");
    let rt = Runtime::start(cfg).await.expect("starts");
    let admin = ballast::config::AdminBind::Tcp(admin_addr(&rt));
    let client = Client::new(admin, None);
    let (status, v) = call(&client, Method::GET, "/api/v1/vrrp", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let i = &v[0];
    assert_eq!(i["name"], "VI_9");
    assert_eq!(i["virtual_router_id"], 9);
    assert_eq!(i["base_priority"], 90);
    assert_eq!(i["virtual_ipaddress"], json!(["192.0.2.9/24"]));
    assert!(
        ["INIT", "FAULT"].contains(&i["state"].as_str().unwrap_or("")),
        "no interface, so neither MASTER nor BACKUP: {i}"
    );
    let (status, s) = call(&client, Method::GET, "/api/v1/status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["vrrp"][0]["name"], "VI_9");
    let (status, bytes) = client
        .request(Method::GET, "/metrics", None)
        .await
        .expect("metrics");
    assert_eq!(status, StatusCode::OK);
    let metrics = String::from_utf8_lossy(&bytes);
    assert!(
        metrics.contains("ballast_vrrp_priority{instance=\"VI_9\"} 90"),
        "{metrics}"
    );
    assert!(metrics.contains("ballast_vrrp_state{instance=\"VI_9\",state=\"MASTER\"} 0"));
    rt.shutdown(std::time::Duration::from_secs(1)).await;
}

/// An HTTP listener over `a` and `b` (rr), the admin API with a token. The hourly check keeps
/// each server's checker (and so the server) alive after a removal, as in production: a removed
/// server's pooled connections must be closed on purpose, not because the server was freed.
fn http_service(a: SocketAddr, b: SocketAddr) -> String {
    format!(
        r#"[admin]
bind = "127.0.0.1:0"
token = "{TOKEN}"

[[listener]]
name = "web"
bind = "127.0.0.1:0"
protocol = "http"
upstream = "h"
workers = 2

[[upstream]]
name = "h"
scheduler = "rr"
connect_timeout = "1s"
[upstream.health_check]
interval = "1h"
timeout = "1s"
[[upstream.server]]
address = "{a}"
[[upstream.server]]
address = "{b}"
"#
    )
}

/// `ipvsadm -a` / `-d` on an upstream an HTTP listener uses, under kept-alive load: the added
/// server gets requests; once the first server (so the others move up in the list) is removed it
/// gets no new request, its pooled idle connections are closed, no request fails, and the pools
/// of the others keep serving their own server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_of_an_http_upstream_are_added_and_removed_under_kept_alive_load() {
    use common::http_backend::{HttpBackend, Load};
    let (a, b, c) = (
        HttpBackend::start("a").await,
        HttpBackend::start("b").await,
        HttpBackend::start("c").await,
    );
    let rt = common::start(&http_service(a.addr, b.addr)).await;
    let ok = Client::new(AdminBind::Tcp(admin_addr(&rt)), Some(TOKEN.into()));
    let web = rt.listener_addr("web").expect("web");
    // 4 kept-alive clients, at most 3000 requests each (the test stops them well before).
    let load = Load::start(web, 4, 3000).await;
    load.wait_for_more(40).await;
    assert!(
        a.open() > 0 && b.open() > 0,
        "pooled connections to a and b"
    );
    assert_eq!(c.requests(), 0);

    let (s, v) = call(
        &ok,
        Method::POST,
        "/api/v1/upstreams/h/servers",
        Some(json!({ "address": c.addr.to_string() })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    common::eventually("the added server answers requests", || c.requests() >= 10).await;

    let (s, v) = call(
        &ok,
        Method::DELETE,
        &format!("/api/v1/upstreams/h/servers/{}", a.addr),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let closed_after =
        common::killable::time_until("a's pooled connections are closed", || a.open() == 0).await;
    // Requests that picked a just before the removal finish; none starts after it.
    load.wait_for_more(40).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (a_requests, from) = (a.requests(), load.answered());
    load.wait_for_more(200).await;
    assert_eq!(a.requests(), a_requests, "a got requests after its removal");
    let later: Vec<String> = load.answers.lock().expect("lock")[from..].to_vec();
    assert!(
        later.iter().all(|n| n == "b" || n == "c"),
        "every later answer is b's or c's (pools follow their server): {later:?}"
    );
    assert!(later.iter().any(|n| n == "b") && later.iter().any(|n| n == "c"));
    assert_eq!(a.open(), 0, "a's connections stay closed");
    assert!(b.open() > 0 && c.open() > 0, "b and c keep theirs");
    let (answers, failures) = load.finish().await;
    eprintln!(
        "{} requests ({} a, {} b, {} c), {} failed; a's connections closed {closed_after:?} after its removal",
        answers.len(),
        a.requests(),
        b.requests(),
        c.requests(),
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    rt.shutdown(PATIENCE).await;
}

/// `GET /` with an optional `Cookie`; (who answered, the `Set-Cookie` value if any).
async fn get_with_cookie(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    cookie: Option<&str>,
) -> (String, Option<String>) {
    use http_body_util::BodyExt;
    let mut req = http::Request::get("/").header("host", "t");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let req = req.body(http_body_util::Empty::new()).expect("request");
    tokio::time::timeout(PATIENCE, async {
        sender.ready().await.expect("ready");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        let set = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().to_owned());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (String::from_utf8_lossy(&body).into_owned(), set)
    })
    .await
    .expect("answer in time")
}

/// A `sticky_cookie` names its server by address, so it keeps naming it when a server before it
/// in the list is removed at runtime (and one added after it changes nothing either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_cookie_follows_its_server_across_runtime_membership_changes() {
    use common::http_backend::{client, HttpBackend};
    let (a, b, c) = (
        HttpBackend::start("a").await,
        HttpBackend::start("b").await,
        HttpBackend::start("c").await,
    );
    let text = http_service(a.addr, b.addr).replace(
        "scheduler = \"rr\"\n",
        "scheduler = \"rr\"\nsticky_cookie = \"srv\"\n",
    );
    let rt = common::start(&text).await;
    let ok = Client::new(AdminBind::Tcp(admin_addr(&rt)), Some(TOKEN.into()));
    let mut web = client(rt.listener_addr("web").expect("web")).await;
    let (s, v) = call(
        &ok,
        Method::POST,
        "/api/v1/upstreams/h/servers",
        Some(json!({ "address": c.addr.to_string() })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // rr over three: one of three requests without a cookie lands on c.
    let mut c_cookie = None;
    for _ in 0..3 {
        if let (name, Some(set)) = get_with_cookie(&mut web, None).await {
            if name == "c" {
                c_cookie = Some(set);
            }
        }
    }
    let c_cookie = c_cookie.expect("c answered one of three and set its cookie");
    let (name, set) = get_with_cookie(&mut web, Some(&c_cookie)).await;
    assert_eq!((name.as_str(), set), ("c", None));
    let (s, v) = call(
        &ok,
        Method::DELETE,
        &format!("/api/v1/upstreams/h/servers/{}", a.addr),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for _ in 0..5 {
        let (name, set) = get_with_cookie(&mut web, Some(&c_cookie)).await;
        assert_eq!((name.as_str(), set), ("c", None), "still c, cookie kept");
    }
    drop(web);
    rt.shutdown(PATIENCE).await;
}

/// With `send_proxy`, server connections are private to the client connection that opened them.
/// Removing a server closes its private idle connections at that client's next request, which
/// goes to another server; no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_proxied_connections_of_a_removed_server_close_at_the_clients_next_request() {
    use common::http_backend::{client, get, HttpBackend};
    let (a, b) = (
        HttpBackend::start_proxied("a").await,
        HttpBackend::start_proxied("b").await,
    );
    let text = http_service(a.addr, b.addr).replace(
        "scheduler = \"rr\"\n",
        "scheduler = \"rr\"\nsend_proxy = \"v1\"\n",
    );
    let rt = common::start(&text).await;
    let ok = Client::new(AdminBind::Tcp(admin_addr(&rt)), Some(TOKEN.into()));
    let web = rt.listener_addr("web").expect("web");
    let (mut one, mut two) = (client(web).await, client(web).await);
    let mut seen = Vec::new();
    // rr: two in a row on each client, so each uses both servers.
    for _ in 0..4 {
        seen.push(get(&mut one).await.expect("one"));
        seen.push(get(&mut one).await.expect("one"));
        seen.push(get(&mut two).await.expect("two"));
        seen.push(get(&mut two).await.expect("two"));
    }
    assert_eq!(seen.iter().filter(|n| *n == "a").count(), 8, "{seen:?}");
    common::eventually("one private connection to a per client", || a.open() == 2).await;
    let (s, v) = call(
        &ok,
        Method::DELETE,
        &format!("/api/v1/upstreams/h/servers/{}", a.addr),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(get(&mut one).await.as_deref(), Ok("b"));
    common::eventually("client one's private connection to a is closed", || {
        a.open() == 1
    })
    .await;
    assert_eq!(get(&mut two).await.as_deref(), Ok("b"));
    common::eventually("client two's too", || a.open() == 0).await;
    for _ in 0..4 {
        assert_eq!(get(&mut one).await.as_deref(), Ok("b"));
    }
    assert_eq!(
        b.open(),
        2,
        "b's private connections are kept, one per client"
    );
    drop((one, two));
    common::eventually("the clients' private connections close with them", || {
        b.open() == 0
    })
    .await;
    rt.shutdown(PATIENCE).await;
}
