//! `vrrp_instance`, `vrrp_script` and the VRRP settings of `global_defs`: parsed completely,
//! written by [`emit_vrrp`].

use super::parse::Node;
use super::{duration, Mapper};
use crate::import::emit::{Plan, Value};
use crate::import::Loc;

impl Mapper {
    pub(super) fn vrrp_instance(&mut self, n: &Node) {
        let mut v = VrrpInstance {
            name: n.arg(0).unwrap_or_default().to_string(),
            at: n.at.clone(),
            ..VrrpInstance::default()
        };
        for k in n.kids() {
            let a0 = k.arg(0).unwrap_or_default().to_string();
            match k.name.as_str() {
                "state" => v.state = Some(a0),
                "interface" => v.interface = Some(a0),
                "virtual_router_id" => {
                    v.virtual_router_id = a0.parse().ok().or_else(|| {
                        self.bad_value(k, "1 to 255");
                        None
                    })
                }
                "priority" => {
                    v.priority = a0.parse().ok().or_else(|| {
                        self.bad_value(k, "1 to 255");
                        None
                    })
                }
                "advert_int" => {
                    v.advert_int = duration(&a0).or_else(|| {
                        self.bad_value(k, "seconds");
                        None
                    })
                }
                "nopreempt" => v.nopreempt = true,
                "preempt_delay" => v.preempt_delay = duration(&a0),
                "authentication" => {
                    for a in k.kids() {
                        match a.name.as_str() {
                            "auth_type" => v.auth_type = a.arg(0).map(str::to_string),
                            "auth_pass" => v.auth_pass = a.arg(0).map(str::to_string),
                            _ => self.unknown(a, "authentication", &["auth_type", "auth_pass"]),
                        }
                    }
                }
                "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                    for a in k.kids() {
                        let mut words = vec![a.name.clone()];
                        words.extend(a.args.iter().cloned());
                        v.virtual_ipaddress.push(words.join(" "));
                    }
                }
                "unicast_peer" => v
                    .unicast_peer
                    .extend(k.kids().iter().map(|p| p.name.clone())),
                "unicast_src_ip" => v.unicast_src_ip = Some(a0),
                "track_interface" => v
                    .track_interface
                    .extend(k.kids().iter().map(|p| p.name.clone())),
                "track_script" => v.track_script.extend(k.kids().iter().map(|p| {
                    let mut w = vec![p.name.clone()];
                    w.extend(p.args.iter().cloned());
                    w.join(" ")
                })),
                "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                    v.notify.push((k.name.clone(), k.args.join(" ")));
                }
                "version"
                | "vrrp_version"
                | "dont_track_primary"
                | "garp_master_delay"
                | "garp_master_repeat"
                | "garp_master_refresh"
                | "garp_lower_prio_repeat"
                | "garp_lower_prio_delay"
                | "smtp_alert"
                | "native_ipv6"
                | "use_vmac"
                | "vmac_xmit_base"
                | "unicast_ttl"
                | "mcast_src_ip"
                | "virtual_routes"
                | "virtual_rules"
                | "strict_mode"
                | "accept"
                | "no_accept"
                | "skip_check_adv_addr"
                | "debug"
                | "track_file"
                | "track_process"
                | "track_bfd"
                | "lvs_sync_daemon_interface"
                | "down_timer_adverts"
                | "notify_master_rx_lower_pri"
                | "higher_prio_send_advert"
                | "kernel_rx_buf_size"
                | "unicast_fault_no_peer"
                | "linkbeat_use_polling" => {
                    let mut w = vec![k.name.clone()];
                    w.extend(k.args.iter().cloned());
                    v.other.push(w.join(" "));
                }
                _ => self.unknown(
                    k,
                    "vrrp_instance",
                    &[
                        "state",
                        "interface",
                        "virtual_router_id",
                        "priority",
                        "advert_int",
                        "authentication",
                        "virtual_ipaddress",
                        "unicast_peer",
                        "unicast_src_ip",
                        "nopreempt",
                        "preempt_delay",
                        "track_interface",
                        "track_script",
                        "notify_master",
                        "notify_backup",
                        "notify_fault",
                        "notify",
                    ],
                ),
            }
        }
        if v.virtual_router_id.is_none() {
            self.error(
                &n.at,
                "vrrp_instance: virtual_router_id is required (1 to 255)",
            );
        }
        self.vrrp.instances.push(v);
    }

    pub(super) fn vrrp_script(&mut self, n: &Node) {
        let mut s = VrrpScript {
            name: n.arg(0).unwrap_or_default().to_string(),
            at: n.at.clone(),
            ..VrrpScript::default()
        };
        for k in n.kids() {
            let a0 = k.arg(0).unwrap_or_default().to_string();
            match k.name.as_str() {
                "script" => s.script = Some(k.args.join(" ")),
                "interval" => s.interval = duration(&a0),
                "timeout" => s.timeout = duration(&a0),
                "weight" => s.weight = a0.parse().ok(),
                "rise" => s.rise = a0.parse().ok(),
                "fall" => s.fall = a0.parse().ok(),
                "user" => s.user = Some(k.args.join(" ")),
                "init_fail" => s.init_fail = true,
                _ => self.unknown(
                    k,
                    "vrrp_script",
                    &[
                        "script",
                        "interval",
                        "timeout",
                        "weight",
                        "rise",
                        "fall",
                        "user",
                        "init_fail",
                    ],
                ),
            }
        }
        self.vrrp.scripts.push(s);
    }
}

// === VRRP ===

/// Everything VRRP in a keepalived.conf, parsed.
#[derive(Debug, Default, Clone)]
pub(super) struct Vrrp {
    pub(super) router_id: Option<(String, Loc)>,
    instances: Vec<VrrpInstance>,
    scripts: Vec<VrrpScript>,
    pub(super) sync_groups: Vec<Node>,
    /// `vrrp_*`/`garp_*` settings of `global_defs`.
    pub(super) global: Vec<Node>,
    pub(super) other: Vec<Node>,
}

/// One `vrrp_instance`.
#[derive(Debug, Default, Clone)]
pub(super) struct VrrpInstance {
    name: String,
    at: Loc,
    state: Option<String>,
    interface: Option<String>,
    virtual_router_id: Option<u8>,
    priority: Option<u8>,
    advert_int: Option<String>,
    auth_type: Option<String>,
    auth_pass: Option<String>,
    virtual_ipaddress: Vec<String>,
    unicast_src_ip: Option<String>,
    unicast_peer: Vec<String>,
    nopreempt: bool,
    preempt_delay: Option<String>,
    track_interface: Vec<String>,
    track_script: Vec<String>,
    notify: Vec<(String, String)>,
    /// Other settings, as written.
    other: Vec<String>,
}

/// One `vrrp_script`.
#[derive(Debug, Default, Clone)]
pub(super) struct VrrpScript {
    name: String,
    at: Loc,
    script: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    weight: Option<i64>,
    rise: Option<u32>,
    fall: Option<u32>,
    user: Option<String>,
    init_fail: bool,
}

fn q(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// Writes the VRRP part. ballast's `[vrrp]` section is not read by this version, so instances
/// and scripts are written as commented TOML in its shape, with one warning; this is the one
/// function to change once `[vrrp]` is read.
pub(super) fn emit_vrrp(plan: &mut Plan, v: &Vrrp) {
    if v.instances.is_empty() && v.scripts.is_empty() {
        return;
    }
    let first = v
        .instances
        .first()
        .map(|i| i.at.clone())
        .or_else(|| v.scripts.first().map(|s| s.at.clone()))
        .unwrap_or_default();
    plan.warn(&first, "VRRP instances are imported as comments: ballast runs VRRP itself from [[vrrp.instance]] tables with Keepalived's names (docs/config.md#vrrp), so uncomment and check them, or keep Keepalived for VRRP alongside ballast");
    let t = &mut plan.trailer;
    t.push("VRRP, parsed from the Keepalived configuration (not yet run by ballast):".into());
    if let Some((id, at)) = &v.router_id {
        t.push(String::new());
        t.push(format!("[vrrp]  # from {at}"));
        t.push(format!("router_id = {}", q(id)));
    }
    for i in &v.instances {
        t.push(String::new());
        t.push(format!("[[vrrp.instance]]  # from {}", i.at));
        t.push(format!("name = {}", q(&i.name)));
        if let Some(s) = &i.state {
            t.push(format!("state = {}", q(&s.to_ascii_lowercase())));
        }
        if let Some(s) = &i.interface {
            t.push(format!("interface = {}", q(s)));
        }
        if let Some(id) = i.virtual_router_id {
            t.push(format!("virtual_router_id = {id}"));
        }
        if let Some(p) = i.priority {
            t.push(format!("priority = {p}"));
        }
        if let Some(a) = &i.advert_int {
            t.push(format!("advert_int = {}", q(a)));
        }
        if let Some(a) = &i.auth_type {
            t.push(format!("auth_type = {}", q(a)));
        }
        if let Some(a) = &i.auth_pass {
            t.push(format!("auth_pass = {}", q(a)));
        }
        let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
        if !i.virtual_ipaddress.is_empty() {
            t.push(format!(
                "virtual_ipaddress = [{}]",
                list(&i.virtual_ipaddress)
            ));
        }
        if let Some(s) = &i.unicast_src_ip {
            t.push(format!("unicast_src_ip = {}", q(s)));
        }
        if !i.unicast_peer.is_empty() {
            t.push(format!("unicast_peer = [{}]", list(&i.unicast_peer)));
        }
        if i.nopreempt {
            t.push("preempt = false".into());
        }
        if let Some(d) = &i.preempt_delay {
            t.push(format!("preempt_delay = {}", q(d)));
        }
        if !i.track_interface.is_empty() {
            t.push(format!("track_interface = [{}]", list(&i.track_interface)));
        }
        if !i.track_script.is_empty() {
            t.push(format!("track_script = [{}]", list(&i.track_script)));
        }
        for (k, cmd) in &i.notify {
            t.push(format!("{k} = {}", q(cmd)));
        }
        for o in &i.other {
            t.push(format!("keepalived: {o}"));
        }
    }
    for s in &v.scripts {
        t.push(String::new());
        t.push(format!("[[vrrp.script]]  # from {}", s.at));
        t.push(format!("name = {}", q(&s.name)));
        if let Some(x) = &s.script {
            t.push(format!("script = {}", q(x)));
        }
        if let Some(x) = &s.interval {
            t.push(format!("interval = {}", q(x)));
        }
        if let Some(x) = &s.timeout {
            t.push(format!("timeout = {}", q(x)));
        }
        if let Some(x) = s.weight {
            t.push(format!("weight = {x}"));
        }
        if let Some(x) = s.rise {
            t.push(format!("rise = {x}"));
        }
        if let Some(x) = s.fall {
            t.push(format!("fall = {x}"));
        }
        if let Some(x) = &s.user {
            t.push(format!("user = {}", q(x)));
        }
        if s.init_fail {
            t.push("init_fail = true".into());
        }
    }
    for n in v.sync_groups.iter().chain(&v.global).chain(&v.other) {
        t.push(format!(
            "keepalived ({}): {} {}",
            n.at,
            n.name,
            n.args.join(" ")
        ));
    }
}
