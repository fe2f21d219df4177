//! `vrrp_instance`, `vrrp_script` and the VRRP settings of `global_defs`: parsed completely,
//! written as ballast's `[vrrp]` section by [`emit_vrrp`].

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

/// Writes the VRRP part as ballast's `[vrrp]` section: one `[[vrrp.instance]]` per
/// `vrrp_instance`, with Keepalived's names; `vrrp_script`s become the `track_script` entries of
/// the instances that track them. What has no counterpart is named in one warning each.
pub(super) fn emit_vrrp(plan: &mut Plan, v: &Vrrp) {
    if v.instances.is_empty() {
        if let Some(s) = v.scripts.first() {
            plan.warn(
                &s.at,
                "vrrp_script without any vrrp_instance: nothing tracks it; not imported",
            );
        }
        return;
    }
    let mut out: Vec<(String, Loc)> = Vec::new();
    if let Some(n) = v.global.iter().find(|n| n.name == "vrrp_version") {
        out.push((format!("[vrrp]  # from {}", n.at), n.at.clone()));
        out.push((
            format!("version = {}", n.arg(0).unwrap_or("2")),
            n.at.clone(),
        ));
        out.push((String::new(), n.at.clone()));
    }
    for n in v.global.iter().filter(|n| n.name != "vrrp_version") {
        plan.warn(&n.at, format!("global_defs {}: not imported; ballast's VRRP uses its own defaults (see docs/config.md#vrrp)", n.name));
    }
    for n in &v.sync_groups {
        plan.warn(&n.at, "vrrp_sync_group: not imported; ballast has no sync groups (track the same interfaces and upstreams in each instance instead)");
    }
    for n in &v.other {
        plan.warn(&n.at, format!("{}: not imported", n.name));
    }
    for i in &v.instances {
        let at = &i.at;
        let mut line = |text: String| out.push((text, at.clone()));
        line(format!("[[vrrp.instance]]  # from {at}"));
        line(format!("name = {}", q(&i.name)));
        if let Some(s) = &i.state {
            line(format!("state = {}", q(&s.to_ascii_uppercase())));
        }
        if let Some(s) = &i.interface {
            line(format!("interface = {}", q(s)));
        }
        if let Some(id) = i.virtual_router_id {
            line(format!("virtual_router_id = {id}"));
        }
        if let Some(p) = i.priority {
            line(format!("priority = {p}"));
        }
        if let Some(a) = &i.advert_int {
            line(format!("advert_int = {}", q(a)));
        }
        if let Some(ver) = i.other.iter().find_map(|o| {
            let mut w = o.split_whitespace();
            matches!(w.next(), Some("version" | "vrrp_version"))
                .then(|| w.next())
                .flatten()
        }) {
            line(format!("version = {ver}"));
        }
        if i.nopreempt {
            line("nopreempt = true".into());
        }
        if let Some(d) = &i.preempt_delay {
            line(format!("preempt_delay = {}", q(d)));
        }
        match (i.auth_type.as_deref(), &i.auth_pass) {
            (Some(t), Some(pass)) if t.eq_ignore_ascii_case("PASS") => line(format!(
                "authentication = {{ auth_type = \"PASS\", auth_pass = {} }}",
                q(pass)
            )),
            (Some(t), _) => plan.warn(
                at,
                format!("authentication auth_type {t}: not imported; ballast supports PASS only"),
            ),
            (None, _) => {}
        }
        let mut vips = Vec::new();
        for raw in &i.virtual_ipaddress {
            let mut words = raw.split_whitespace();
            let Some(addr) = words.next() else { continue };
            vips.push(q(addr));
            let rest: Vec<&str> = words.collect();
            if !rest.is_empty() {
                plan.warn(at, format!("virtual_ipaddress {raw}: imported as {addr}; the options {} are not supported (VIPs go on the instance's interface)", rest.join(" ")));
            }
        }
        if !vips.is_empty() {
            line(format!("virtual_ipaddress = [{}]", vips.join(", ")));
        }
        if let Some(s) = &i.unicast_src_ip {
            line(format!("unicast_src_ip = {}", q(s)));
        }
        if !i.unicast_peer.is_empty() {
            let peers: Vec<String> = i.unicast_peer.iter().map(|p| q(p)).collect();
            line(format!("unicast_peer = [{}]", peers.join(", ")));
        }
        if !i.track_interface.is_empty() {
            let t: Vec<String> = i
                .track_interface
                .iter()
                .map(|n| format!("{{ interface = {} }}", q(n)))
                .collect();
            line(format!("track_interface = [{}]", t.join(", ")));
        }
        let mut tracks = Vec::new();
        for entry in &i.track_script {
            let mut words = entry.split_whitespace();
            let Some(name) = words.next() else { continue };
            let Some(script) = v.scripts.iter().find(|s| s.name == name) else {
                plan.warn(
                    at,
                    format!("track_script {name}: no vrrp_script of that name; not imported"),
                );
                continue;
            };
            let Some(cmd) = &script.script else {
                plan.warn(
                    &script.at,
                    format!("vrrp_script {name}: no script line; not imported"),
                );
                continue;
            };
            // `track_script { NAME weight W }` overrides the script's own weight.
            let rest: Vec<&str> = words.collect();
            let weight = match rest.as_slice() {
                ["weight", w, ..] => w.parse().ok(),
                _ => None,
            }
            .or(script.weight);
            let mut fields = vec![format!("script = {}", q(cmd))];
            if let Some(x) = &script.interval {
                fields.push(format!("interval = {}", q(x)));
            }
            if let Some(x) = &script.timeout {
                fields.push(format!("timeout = {}", q(x)));
            }
            if let Some(x) = weight {
                fields.push(format!("weight = {x}"));
            }
            if let Some(x) = script.rise {
                fields.push(format!("rise = {x}"));
            }
            if let Some(x) = script.fall {
                fields.push(format!("fall = {x}"));
            }
            if script.user.is_some() || script.init_fail {
                plan.warn(&script.at, format!("vrrp_script {name}: user and init_fail are not imported (ballast runs it as its own user, starting as passed)"));
            }
            tracks.push(format!("{{ {} }}", fields.join(", ")));
        }
        if !tracks.is_empty() {
            line(format!("track_script = [{}]", tracks.join(", ")));
        }
        for (k, cmd) in &i.notify {
            line(format!("{k} = {}", q(cmd)));
        }
        for o in &i.other {
            let name = o.split_whitespace().next().unwrap_or_default();
            if !matches!(name, "version" | "vrrp_version") {
                plan.warn(at, format!("vrrp_instance {}: {o}: not imported", i.name));
            }
        }
        line(String::new());
    }
    plan.tail = out;
}
