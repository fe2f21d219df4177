//! `ballast demo`: the balancer on an embedded default configuration, in front of three small
//! backends started in the same process, so a fresh machine shows requests being spread with no
//! config file and nothing else installed.
//!
//! Each demo backend answers anything it reads (an HTTP request from `curl`, or a line from `nc`)
//! with one short HTTP/1.0 response naming itself, then closes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The embedded default configuration. `{port}` and `{backend1..3}` are filled in at start.
pub const DEFAULT_CONFIG: &str = include_str!("demo.toml");

/// Renders the embedded configuration for a listener port and three backend addresses.
pub fn config_text(port: u16, backends: &[SocketAddr; 3]) -> String {
    DEFAULT_CONFIG
        .replace("{port}", &port.to_string())
        .replace("{backend1}", &backends[0].to_string())
        .replace("{backend2}", &backends[1].to_string())
        .replace("{backend3}", &backends[2].to_string())
}

/// Starts a demo backend named `name` on an ephemeral loopback port; it runs until `stop`.
///
/// # Errors
/// When no loopback port can be bound.
pub async fn spawn_backend(name: String, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let name = name.clone();
            tokio::spawn(async move {
                let _ = answer(stream, &name, addr).await;
            });
        }
    });
    Ok(addr)
}

/// Reads until the end of an HTTP header block, a newline-terminated line followed by EOF, or one
/// second of silence, then answers and closes.
async fn answer(mut stream: TcpStream, name: &str, addr: SocketAddr) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    let mut seen = 0usize;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let n = stream.read(&mut buf[seen..]).await?;
            if n == 0 {
                break;
            }
            seen += n;
            let head = &buf[..seen];
            if seen == buf.len()
                || head.windows(4).any(|w| w == b"\r\n\r\n")
                || head.windows(2).any(|w| w == b"\n\n")
            {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    let body = format!("hello from {name} ({addr})\n");
    let response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
