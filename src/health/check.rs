//! The active probes: one TCP connect, one HTTP `GET`, or one TLS handshake, bounded by the
//! check's `timeout`, on a fresh connection each time (an established connection can hide a
//! firewall or an L4 balancer that no longer lets new ones through).
//!
//! Probe sockets are closed with a RST (SO_LINGER 0), as HAProxy closes its checks: 1,000 servers
//! checked every second would otherwise leave 60,000 sockets in TIME_WAIT on ballast's side and
//! eat the ephemeral port range that real traffic needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::{
    CheckKind, HealthCheckConfig, HttpCheckConfig, ServerVerification, UdpCheckConfig,
};
use crate::tls::TlsError;

/// Most body bytes an `http` check reads when it looks for `expect_body`.
const BODY_LIMIT: usize = 64 * 1024;

/// One kind of check, ready to run against any server of an upstream.
pub(crate) struct Probe {
    kind: CheckKind,
    timeout: Duration,
    http: HttpCheckConfig,
    /// What `udp` and `dns` checks send and expect.
    udp: UdpCheckConfig,
    /// TLS for `tls` checks, and for `http` checks of an upstream with `tls = true`.
    tls: Option<ProbeTls>,
}

struct ProbeTls {
    connector: tokio_rustls::TlsConnector,
    /// The upstream's `tls_server_name`; the server's IP address otherwise.
    server_name: Option<ServerName<'static>>,
}

impl Probe {
    /// A probe for `check` on an upstream whose TLS settings are `tls`. A `tls` check of an
    /// upstream without `tls = true` checks only that a handshake completes: no certificate is
    /// verified (ballast cannot know what to expect).
    ///
    /// # Errors
    /// When the upstream's CA file cannot be used.
    pub(crate) fn new(
        check: &HealthCheckConfig,
        tls: Option<&crate::config::UpstreamTls>,
    ) -> Result<Probe, TlsError> {
        let wants_tls = match check.kind {
            CheckKind::Tcp => false,
            CheckKind::Http => tls.is_some(),
            CheckKind::Tls => true,
            CheckKind::Udp | CheckKind::Dns => false,
        };
        let tls = if wants_tls {
            let alpn: &[&[u8]] = match check.kind {
                CheckKind::Http => &[b"http/1.1"],
                _ => &[],
            };
            let (verify, server_name) = match tls {
                Some(t) => (t.verify.clone(), t.server_name.clone()),
                None => (ServerVerification::Insecure, None),
            };
            let config = crate::tls::client_config(&verify, alpn)?;
            Some(ProbeTls {
                connector: tokio_rustls::TlsConnector::from(config),
                server_name: server_name.and_then(|n| ServerName::try_from(n).ok()),
            })
        } else {
            None
        };
        Ok(Probe {
            kind: check.kind,
            timeout: check.timeout,
            http: check.http.clone(),
            udp: check.udp.clone(),
            tls,
        })
    }

    /// Runs one check against `addr`; `Err` says why it failed, in words for the log
    /// ("connect refused", "HTTP status 500, expected 2xx or 3xx").
    pub(crate) async fn run(&self, addr: SocketAddr) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.attempt(addr)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn attempt(&self, addr: SocketAddr) -> Result<(), String> {
        match self.kind {
            CheckKind::Udp => {
                let expect = self.udp.expect.as_deref();
                return super::udp::udp_probe(addr, &self.udp.send, expect).await;
            }
            CheckKind::Dns => return super::udp::dns_probe(addr, &self.udp.query_name).await,
            CheckKind::Tcp | CheckKind::Http | CheckKind::Tls => {}
        }
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| connect_error(&e))?;
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        match (&self.tls, self.kind) {
            (_, CheckKind::Tcp) => Ok(()),
            (Some(tls), kind) => {
                let name = tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
                let stream = tls
                    .connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                if kind == CheckKind::Http {
                    self.http_get(stream, addr).await
                } else {
                    Ok(())
                }
            }
            (None, _) => self.http_get(stream, addr).await,
        }
    }

    /// `GET path` over HTTP/1.1 with `Connection: close`; checks the status and, if asked, the
    /// body.
    async fn http_get<S>(&self, stream: S, addr: SocketAddr) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        // Ends with the connection: when the server closes, or when this probe returns.
        let driver = tokio::spawn(conn);
        let host = match &self.http.host {
            Some(h) => h.clone(),
            None => addr.to_string(),
        };
        let req = http::Request::get(self.http.path.as_str())
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "ballast-health-check")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the check request: {e}"))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("HTTP request failed: {e}"))?;
            let status = resp.status().as_u16();
            if !self.status_ok(status) {
                return Err(format!(
                    "HTTP status {status}, expected {}",
                    self.expected()
                ));
            }
            let Some(needle) = &self.http.expect_body else {
                return Ok(());
            };
            let mut body = resp.into_body();
            let mut seen: Vec<u8> = Vec::new();
            while seen.len() < BODY_LIMIT {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            seen.extend_from_slice(data);
                        }
                    }
                    Some(Err(e)) => return Err(format!("reading the body failed: {e}")),
                    None => break,
                }
            }
            seen.truncate(BODY_LIMIT);
            if contains(&seen, needle.as_bytes()) {
                Ok(())
            } else {
                Err(format!("body does not contain {needle:?}"))
            }
        }
        .await;
        driver.abort();
        result
    }

    fn status_ok(&self, status: u16) -> bool {
        if self.http.expect_status.is_empty() {
            (200..400).contains(&status)
        } else {
            self.http.expect_status.contains(&status)
        }
    }

    fn expected(&self) -> String {
        if self.http.expect_status.is_empty() {
            return "2xx or 3xx".to_owned();
        }
        let list: Vec<String> = self
            .http
            .expect_status
            .iter()
            .map(ToString::to_string)
            .collect();
        list.join(" or ")
    }
}

/// Shared probe state is immutable; one `Arc<Probe>` serves every server's checker.
pub(crate) type SharedProbe = Arc<Probe>;

/// A connect error in the words an operator uses.
fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect refused".to_owned(),
        _ => format!("connect failed: {e}"),
    }
}

/// Whether `needle` occurs in `hay` (the body window is at most 64 KiB, so the naive scan is
/// fine).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::contains;

    #[test]
    fn body_substring_search() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"status: down\n", b"ok"));
        assert!(!contains(b"o", b"ok"));
    }
}
