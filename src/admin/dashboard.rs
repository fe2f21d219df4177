//! `GET /`: the dashboard, one self-contained page (inline CSS and JavaScript, nothing fetched
//! from elsewhere) that polls `/api/v1/listeners` and `/api/v1/upstreams` every second and
//! draws every listener, upstream and server: state colours (up, draining, down, disabled),
//! connections, rates, health and latency. With a token typed in (or given as `#token=…` in the
//! address), each server gets drain / enable buttons that call the API.
//!
//! Each server row carries `data-server="IP:port"` and `data-status="up|down|draining|disabled"`
//! so scripts and tests can read the page as an operator reads its colours.

use bytes::Bytes;
use http::StatusCode;

use super::{api, Resp};

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// Serves the page.
pub fn page() -> Resp {
    api::respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from_static(PAGE.as_bytes()),
    )
}
