//! Access logs: one line per TCP connection and per HTTP request, text or JSON, to a file that
//! is reopened on request (what SIGUSR1 does, for logrotate).

mod common;

use std::time::Duration;

use common::killable::{Client, Killable, Kind};
use common::{Backend, PATIENCE};
use serde_json::Value;

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_and_http_requests_are_logged_and_the_file_is_reopened() {
    let a = Backend::start("a").await;
    let h = Killable::start("h", Kind::Http).await;
    let dir = std::env::temp_dir().join(format!("ballast-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let text = format!(
        "[global]\naccess_log = \"{}\"\naccess_log_format = \"json\"\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"h\"\n\n[[upstream]]\nname = \"u\"\n[[upstream.server]]\naddress = \"{}\"\n\n[[upstream]]\nname = \"h\"\n[[upstream.server]]\naddress = \"{}\"\n",
        path.display(),
        a.addr,
        h.addr
    );
    let rt = common::start(&text).await;
    let l = rt.listener_addr("l").expect("l");
    assert_eq!(common::killable::tcp_exchange(l).await.as_deref(), Ok("a"));
    let mut c = Client::connect(rt.listener_addr("web").expect("web")).await;
    let (status, body, _) = c.get("/x?y=1", None).await.expect("answer");
    assert_eq!(status, 200);
    drop(c);
    rt.flush_access_log().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while lines(&path).len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lines: {:?}",
            lines(&path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        rt.flush_access_log().await;
    }
    let entries: Vec<Value> = lines(&path)
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let tcp = entries
        .iter()
        .find(|e| e["type"] == "tcp")
        .expect("a tcp line");
    assert_eq!(tcp["listener"], "l");
    assert_eq!(tcp["server"], a.addr.to_string());
    assert_eq!(tcp["outcome"], "closed");
    assert_eq!(tcp["bytes_in"], 5, "ping\\n");
    let http = entries
        .iter()
        .find(|e| e["type"] == "http")
        .expect("an http line");
    assert_eq!(http["method"], "GET");
    assert_eq!(http["path"], "/x?y=1");
    assert_eq!(http["status"], 200);
    assert_eq!(http["bytes"], body.len());
    assert_eq!(http["server"], h.addr.to_string());
    assert_eq!(http["request_id"].as_str().map(str::len), Some(32));

    // logrotate moves the file away; after the reopen, new lines go to a new file.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).expect("rotate");
    rt.reopen_access_log();
    tokio::time::sleep(Duration::from_millis(300)).await;
    common::killable::tcp_exchange(l).await.expect("exchange");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while lines(&path).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no line in the reopened file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        rt.flush_access_log().await;
    }
    assert_eq!(lines(&rotated).len(), 2, "the old file keeps what it had");
    assert_eq!(rt.access_log_dropped(), 0);
    rt.shutdown(PATIENCE).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_access_log_format_without_a_log_is_an_error() {
    let text = "[global]\naccess_log_format = \"json\"\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\n[[upstream]]\nname = \"u\"\n[[upstream.server]]\naddress = \"127.0.0.1:1\"\n";
    let msg = ballast::config::Config::from_str(text, "t.toml")
        .expect_err("refused")
        .to_string();
    assert_eq!(msg, "t.toml:2:21: global.access_log_format: has no effect without access_log; add access_log = \"stdout\" or a file path");
}
