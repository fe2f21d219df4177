//! `notify_up` / `notify_down`: shell commands run when a server changes state (Keepalived's
//! real-server `notify_up` / `notify_down`).
//!
//! Each command runs as `sh -c COMMAND sh UPSTREAM SERVER STATE` (so `$1`, `$2`, `$3` work), with
//! `BALLAST_UPSTREAM`, `BALLAST_SERVER` (`IP:port`), `BALLAST_STATE` (`up` or `down`),
//! `BALLAST_OLD_STATE` and `BALLAST_REASON` in its environment. It runs on its own task, never on
//! the data path or the checker's; at most [`MAX_RUNNING`] run at once and at most
//! [`MAX_WAITING`] wait for a turn (more are dropped with a warning, so a flapping upstream cannot
//! pile up processes); one still running after `notify_timeout` is killed. A failure to start,
//! a non-zero exit and a kill are logged.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Most notify commands running at once, process-wide.
pub const MAX_RUNNING: usize = 8;
/// Most notify commands waiting for a turn; beyond that, new ones are dropped.
pub const MAX_WAITING: usize = 256;

/// Runs notify commands within the limits above.
#[derive(Debug, Clone)]
pub struct Notifier {
    running: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

impl Default for Notifier {
    fn default() -> Notifier {
        Notifier {
            running: Arc::new(Semaphore::new(MAX_RUNNING)),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// What one notification says.
#[derive(Debug, Clone)]
pub struct Event {
    /// The upstream's name.
    pub upstream: String,
    /// The server's address.
    pub server: String,
    /// `up` or `down`.
    pub state: &'static str,
    /// The state before.
    pub old_state: &'static str,
    /// Why, in words.
    pub reason: String,
}

impl Notifier {
    /// Starts `command` for `event` on a task of its own and returns at once.
    pub fn spawn(&self, command: &str, timeout: Duration, event: Event) {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(upstream = %event.upstream, server = %event.server, state = event.state,
                "too many notify commands waiting; this one is dropped");
            return;
        }
        let running = Arc::clone(&self.running);
        let waiting = Arc::clone(&self.waiting);
        let command = command.to_owned();
        tokio::spawn(async move {
            let permit = running.acquire_owned().await;
            waiting.fetch_sub(1, Ordering::Relaxed);
            let Ok(_permit) = permit else { return };
            run(&command, timeout, &event).await;
        });
    }
}

async fn run(command: &str, timeout: Duration, event: &Event) {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .arg("sh")
        .arg(&event.upstream)
        .arg(&event.server)
        .arg(event.state)
        .env("BALLAST_UPSTREAM", &event.upstream)
        .env("BALLAST_SERVER", &event.server)
        .env("BALLAST_STATE", event.state)
        .env("BALLAST_OLD_STATE", event.old_state)
        .env("BALLAST_REASON", &event.reason)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(upstream = %event.upstream, server = %event.server, %command, error = %e,
                "cannot start notify command");
            return;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::debug!(upstream = %event.upstream, server = %event.server, %command, "notify command done");
        }
        Ok(Ok(status)) => {
            tracing::warn!(upstream = %event.upstream, server = %event.server, %command, %status,
                "notify command failed");
        }
        Ok(Err(e)) => {
            tracing::warn!(upstream = %event.upstream, server = %event.server, %command, error = %e,
                "cannot wait for notify command");
        }
        Err(_) => {
            let _ = child.kill().await;
            tracing::warn!(upstream = %event.upstream, server = %event.server, %command, ?timeout,
                "notify command still running at notify_timeout; killed");
        }
    }
}
