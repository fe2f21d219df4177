//! Raw types of the `[vrrp]` section (stage 1; see `toml.rs`). Checked by `validate_vrrp.rs`.

use ::toml::Spanned;
use serde::Deserialize;

use super::DurationToml;

/// `[vrrp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VrrpToml {
    /// `version`: default for every instance (Keepalived `vrrp_version`).
    pub(crate) version: Option<Spanned<i64>>,
    /// `[[vrrp.instance]]` tables.
    #[serde(default)]
    pub(crate) instance: Vec<Spanned<VrrpInstanceToml>>,
}

/// One `[[vrrp.instance]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VrrpInstanceToml {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) state: Option<Spanned<String>>,
    pub(crate) interface: Option<Spanned<String>>,
    pub(crate) virtual_router_id: Option<Spanned<i64>>,
    pub(crate) priority: Option<Spanned<i64>>,
    pub(crate) advert_int: Option<Spanned<DurationToml>>,
    pub(crate) version: Option<Spanned<i64>>,
    pub(crate) nopreempt: Option<bool>,
    pub(crate) preempt_delay: Option<Spanned<DurationToml>>,
    pub(crate) authentication: Option<Spanned<AuthenticationToml>>,
    #[serde(default)]
    pub(crate) virtual_ipaddress: Vec<Spanned<String>>,
    pub(crate) unicast_src_ip: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) unicast_peer: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) track_interface: Vec<Spanned<TrackInterfaceToml>>,
    #[serde(default)]
    pub(crate) track_script: Vec<Spanned<TrackScriptToml>>,
    #[serde(default)]
    pub(crate) track_upstream: Vec<Spanned<TrackUpstreamToml>>,
    pub(crate) notify_master: Option<Spanned<String>>,
    pub(crate) notify_backup: Option<Spanned<String>>,
    pub(crate) notify_fault: Option<Spanned<String>>,
    pub(crate) notify_stop: Option<Spanned<String>>,
    pub(crate) notify: Option<Spanned<String>>,
    pub(crate) garp_master_delay: Option<Spanned<DurationToml>>,
    pub(crate) garp_master_repeat: Option<Spanned<i64>>,
    pub(crate) garp_master_refresh: Option<Spanned<DurationToml>>,
}

/// `authentication = { auth_type = "PASS", auth_pass = "…" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthenticationToml {
    pub(crate) auth_type: Option<Spanned<String>>,
    pub(crate) auth_pass: Option<Spanned<String>>,
}

/// One `track_interface` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrackInterfaceToml {
    pub(crate) interface: Option<Spanned<String>>,
    pub(crate) weight: Option<Spanned<i64>>,
}

/// One `track_script` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrackScriptToml {
    pub(crate) script: Option<Spanned<String>>,
    pub(crate) interval: Option<Spanned<DurationToml>>,
    pub(crate) timeout: Option<Spanned<DurationToml>>,
    pub(crate) weight: Option<Spanned<i64>>,
    pub(crate) rise: Option<Spanned<i64>>,
    pub(crate) fall: Option<Spanned<i64>>,
}

/// One `track_upstream` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrackUpstreamToml {
    pub(crate) upstream: Option<Spanned<String>>,
    pub(crate) weight: Option<Spanned<i64>>,
}
