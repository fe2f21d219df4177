//! Process signals, all in one place.
//!
//! | signal          | effect |
//! |-----------------|--------|
//! | SIGTERM, SIGINT | graceful stop: stop accepting, let connections finish for `shutdown_grace`, exit 0 |
//! | the same again  | stop now: close every connection and exit 0 |
//! | SIGUSR1         | log a table of listeners, upstreams and per-server counters; reopen the access log file |
//! | SIGHUP          | reload: re-read the configuration file and apply it in place ([`super::reload`]) |

use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks the process to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGUSR1.
    DumpStats,
    /// SIGHUP.
    Reload,
}

/// Listens for the signals ballast handles.
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
    usr1: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers. From here on SIGTERM/SIGINT no longer kill the process outright.
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal.
    pub async fn next(&mut self) -> Request {
        tokio::select! {
            _ = self.term.recv() => Request::Stop,
            _ = self.int.recv() => Request::Stop,
            _ = self.usr1.recv() => Request::DumpStats,
            _ = self.hup.recv() => Request::Reload,
        }
    }
}
