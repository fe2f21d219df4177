//! A small client of the admin API, for `ballast ctl`: one HTTP/1.1 request per connection, over
//! TCP or a unix socket.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::config::AdminBind;

/// Why a request to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect.
    #[error("cannot connect to the admin API at {target}")]
    Connect {
        /// Where.
        target: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("the admin API at {target} did not answer properly")]
    Http {
        /// Where.
        target: String,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("the admin API at {target} did not answer within {timeout:?}")]
    Timeout {
        /// Where.
        target: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The request could not be built (a path with characters a URI cannot hold).
    #[error("cannot build the request: {0}")]
    Request(String),
}

/// Where the admin API is and the token to send.
#[derive(Debug, Clone)]
pub struct Client {
    /// The admin address.
    pub target: AdminBind,
    /// The bearer token, if any (its `Debug` shows `<redacted>`).
    pub token: Option<crate::secret::Secret>,
    /// Longest wait for one exchange.
    pub timeout: Duration,
}

impl Client {
    /// A client of the API at `target`.
    pub fn new(target: AdminBind, token: Option<String>) -> Client {
        Client {
            target,
            token: token.map(crate::secret::Secret::new),
            timeout: Duration::from_secs(30),
        }
    }

    /// Sends one request; returns the status and body.
    ///
    /// # Errors
    /// [`ClientError`] when no HTTP answer came back.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let target = self.target.to_string();
        match tokio::time::timeout(self.timeout, self.exchange(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                target,
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let target = self.target.to_string();
        let host = match &self.target {
            AdminBind::Tcp(a) => a.to_string(),
            AdminBind::Unix(_) => "localhost".to_owned(),
        };
        let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", t.expose()));
        }
        let req = req
            .body(Full::new(payload))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let connect_err = |source| ClientError::Connect {
            target: target.clone(),
            source,
        };
        let http_err = |source| ClientError::Http {
            target: target.clone(),
            source,
        };
        match &self.target {
            AdminBind::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(connect_err)?;
                send(s, req).await.map_err(http_err)
            }
            AdminBind::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(connect_err)?;
                send(s, req).await.map_err(http_err)
            }
        }
    }
}

async fn send<S>(stream: S, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, body))
}
