//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver
//! over HTTP, spoken here with hyper). A server whose backend is killed during the test must turn
//! "down" on the page, by the page's own polling.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`.ci/run` installs them). Without
//! them the test says so and passes, except when `CI` is set, where a skip is a failure.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ballast::config::AdminBind;
use bytes::Bytes;
use common::killable::{Killable, Kind};
use common::PATIENCE;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

fn find(names: &[&str]) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        path.split(':')
            .map(|d| std::path::Path::new(d).join(n))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn webdriver(driver: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let s = tokio::net::TcpStream::connect(driver)
        .await
        .expect("connect to chromedriver");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", driver.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(payload)))
        .expect("request");
    let resp = tokio::time::timeout(PATIENCE * 3, sender.send_request(req))
        .await
        .expect("chromedriver answers in time")
        .expect("chromedriver answers");
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

async fn start_driver(bin: &str) -> Driver {
    let port = common::closed_port().await.port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let driver = Driver { child, addr };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver
}

/// The `data-status` of the row of `server`, or "" when the row is not on the page yet.
async fn row_status(driver: SocketAddr, session: &str, server: SocketAddr) -> String {
    let script = "var r = document.querySelector('tr[data-server=\"' + arguments[0] + '\"]'); return r ? r.getAttribute('data-status') : '';";
    let v = webdriver(
        driver,
        "POST",
        &format!("/session/{session}/execute/sync"),
        Some(json!({ "script": script, "args": [server.to_string()] })),
    )
    .await;
    v["value"].as_str().unwrap_or_default().to_owned()
}

async fn wait_status(
    driver: SocketAddr,
    session: &str,
    server: SocketAddr,
    want: &str,
) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let got = row_status(driver, session, server).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{server} shows {got:?} on the page, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_turns_down_on_the_dashboard() {
    let (Some(chromium), Some(chromedriver)) = (
        find(&["chromium", "chromium-browser", "google-chrome"]),
        find(&["chromedriver"]),
    ) else {
        assert!(
            std::env::var("CI").is_err(),
            "chromium / chromedriver missing, and CI is set: .ci/run installs chromium and chromium-driver"
        );
        eprintln!("SKIPPED: chromium or chromedriver is missing (Debian: apt-get install chromium chromium-driver)");
        return;
    };
    let a = Killable::start("a", Kind::Tcp).await;
    let mut b = Killable::start("b", Kind::Tcp).await;
    let text = common::config(
        "rr",
        &common::servers(&[(a.addr, 1), (b.addr, 1)]),
        "",
        "[upstream.health_check]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n",
    ) + "\n[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"dashboard-test-token-0123\"\n";
    let rt = common::start(&text).await;
    let Some(AdminBind::Tcp(admin)) = rt.admin_bind().cloned() else {
        panic!("admin on TCP");
    };

    let driver = start_driver(&chromedriver).await;
    let caps = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
        }
    }}});
    let session = webdriver(driver.addr, "POST", "/session", Some(caps)).await;
    let Some(id) = session["value"]["sessionId"].as_str().map(str::to_owned) else {
        panic!("no WebDriver session: {session}");
    };
    let url = format!("http://{admin}/#token=dashboard-test-token-0123");
    webdriver(
        driver.addr,
        "POST",
        &format!("/session/{id}/url"),
        Some(json!({ "url": url })),
    )
    .await;

    wait_status(driver.addr, &id, a.addr, "up").await;
    wait_status(driver.addr, &id, b.addr, "up").await;
    b.kill();
    let took = wait_status(driver.addr, &id, b.addr, "down").await;
    eprintln!("the page showed {} down {took:?} after the kill", b.addr);
    assert_eq!(row_status(driver.addr, &id, a.addr).await, "up");

    // The drain button (shown because a token was given) drains a through the API.
    let click = "var r = document.querySelector('tr[data-server=\"' + arguments[0] + '\"] button'); if (!r) return false; r.click(); return true;";
    let clicked = webdriver(
        driver.addr,
        "POST",
        &format!("/session/{id}/execute/sync"),
        Some(json!({ "script": click, "args": [a.addr.to_string()] })),
    )
    .await;
    assert_eq!(clicked["value"], true, "a drain button: {clicked}");
    wait_status(driver.addr, &id, a.addr, "draining").await;

    webdriver(driver.addr, "DELETE", &format!("/session/{id}"), None).await;
    drop(driver);
    rt.shutdown(PATIENCE).await;
}
