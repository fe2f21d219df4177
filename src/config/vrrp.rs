//! The validated `[vrrp]` section: VRRP instances, Keepalived `vrrp_instance` style.
//!
//! Key names are Keepalived's (`virtual_router_id`, `advert_int`, `virtual_ipaddress`,
//! `unicast_peer`, `track_interface`, `notify_master`…) so a `keepalived.conf` reads across
//! almost line by line; `docs/config.md` lists each key with its Keepalived equivalent.

use std::net::IpAddr;
use std::time::Duration;

pub use crate::vrrp::packet::Version as VrrpVersion;

/// One `[[vrrp.instance]]`: a virtual router this node takes part in.
#[derive(Debug, Clone, PartialEq)]
pub struct VrrpInstanceConfig {
    /// `name`: unique; used in logs and passed to `notify` scripts (Keepalived's instance name).
    pub name: String,
    /// `state`: the state asked for at start (`MASTER` or `BACKUP`). As in Keepalived 2.2, an
    /// instance below priority 255 starts in BACKUP either way and becomes MASTER when no better
    /// router advertises within `Master_Down_Interval`. Default: `BACKUP`.
    pub initial_master: bool,
    /// `interface`: where adverts are sent and received and the VIPs are added.
    pub interface: String,
    /// `virtual_router_id`: 1..=255, required; the same on every router of the group.
    pub vrid: u8,
    /// `priority`: 1..=255, default 100; 255 = address owner (starts as MASTER at once).
    pub priority: u8,
    /// `advert_int`: default 1 s; v2 whole seconds (1..=255 s), v3 10 ms steps (10 ms..=40.95 s).
    pub advert_int: Duration,
    /// `version` (Keepalived `vrrp_version`): default 2 for IPv4 (Keepalived's default), always 3
    /// for IPv6.
    pub version: VrrpVersion,
    /// `nopreempt`: a higher-priority BACKUP leaves a lower-priority MASTER alone. Default false.
    pub nopreempt: bool,
    /// `preempt_delay`: how long a higher-priority BACKUP waits after start-up (or after first
    /// seeing a lower-priority MASTER) before it preempts. Default 0.
    pub preempt_delay: Duration,
    /// `authentication.auth_pass` with `auth_type = "PASS"` (v2 only): up to 8 bytes.
    pub auth_pass: Option<crate::secret::Secret>,
    /// `virtual_ipaddress`: the VIPs, one family, at least one.
    pub virtual_ipaddress: Vec<VirtualAddress>,
    /// `unicast_src_ip`: the source of adverts; default the interface's primary address
    /// (IPv4) or link-local address (IPv6).
    pub unicast_src_ip: Option<IpAddr>,
    /// `unicast_peer`: send adverts to these routers instead of the multicast group, and accept
    /// adverts only from them. Empty = multicast (default).
    pub unicast_peer: Vec<IpAddr>,
    /// `track_interface`: interfaces whose state changes the priority (or means FAULT).
    pub track_interface: Vec<TrackInterface>,
    /// `track_script`: commands run periodically; a failure changes the priority (or FAULT).
    pub track_script: Vec<TrackScript>,
    /// `track_upstream`: upstreams; having no usable server changes the priority (or FAULT).
    pub track_upstream: Vec<TrackUpstream>,
    /// The `notify_*` commands.
    pub notify: Notify,
    /// `garp_master_delay`: after becoming MASTER, a second batch of gratuitous ARPs / NAs this
    /// much later; 0 = none. Default 5 s (Keepalived `vrrp_garp_master_delay`).
    pub garp_master_delay: Duration,
    /// `garp_master_repeat`: messages per batch. Default 5.
    pub garp_master_repeat: u32,
    /// `garp_master_refresh`: while MASTER, repeat a batch this often; `None` = never (default).
    pub garp_master_refresh: Option<Duration>,
}

/// A virtual address with its prefix length (`10.0.0.50/24`; default /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualAddress {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length added with it.
    pub prefix_len: u8,
}

/// Keepalived's weight rule, shared by every tracked object: weight 0 = FAULT while it is down;
/// a negative weight is added to the priority while it is down; a positive one while it is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInterface {
    /// `interface`.
    pub interface: String,
    /// `weight`: -253..=253, default 0.
    pub weight: i32,
}

/// `track_script` entry (Keepalived `vrrp_script` + `track_script`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackScript {
    /// `script`: run with `/bin/sh -c`; exit status 0 = up.
    pub script: String,
    /// `interval`: between runs. Default 1 s.
    pub interval: std::time::Duration,
    /// `timeout`: a run taking longer is killed and counts as a failure. Default = `interval`.
    pub timeout: std::time::Duration,
    /// `weight`: -253..=253, default 0.
    pub weight: i32,
    /// `rise`: successes in a row that make it up. Default 1.
    pub rise: u32,
    /// `fall`: failures in a row that make it down. Default 1.
    pub fall: u32,
}

/// `track_upstream` entry: down while the upstream has no usable server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackUpstream {
    /// `upstream`: the name of an `[[upstream]]`.
    pub upstream: String,
    /// `weight`: -253..=253, default 0.
    pub weight: i32,
}

/// Commands run on transitions, with `/bin/sh -c` (Keepalived `notify_master` and friends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    /// `notify_master`.
    pub master: Option<String>,
    /// `notify_backup`.
    pub backup: Option<String>,
    /// `notify_fault`.
    pub fault: Option<String>,
    /// `notify_stop`: when the instance stops (ballast exits).
    pub stop: Option<String>,
    /// `notify`: on every transition, with the arguments `INSTANCE NAME STATE PRIORITY`.
    pub any: Option<String>,
}
