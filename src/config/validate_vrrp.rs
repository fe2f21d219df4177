//! Validation of the `[vrrp]` section. A child of `validate.rs`, sharing its `Validator`: every
//! problem collected with its line, column and key path (`vrrp.instance[0].priority`).
//!
//! The rules are Keepalived's where it has one: VRID 1..=255, priority 1..=255, v2 intervals in
//! whole seconds, authentication only with v2, IPv6 always v3, track weights -253..=253,
//! `preempt_delay` up to 1000 s. Where Keepalived silently adjusts (rounding a v2 interval,
//! cutting a password to 8 bytes, ignoring `authentication` with v3) ballast refuses and says
//! what to write instead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use ::toml::Spanned;

use super::super::toml::{ConfigToml, DurationToml, VrrpInstanceToml};
use super::super::vrrp::{
    Notify, TrackInterface, TrackScript, TrackUpstream, VirtualAddress, VrrpInstanceConfig,
    VrrpVersion,
};
use super::Validator;

/// Longest interface name Linux allows (IFNAMSIZ − 1).
const IFNAME_MAX: usize = 15;

impl Validator<'_, '_> {
    /// The VRRP instances; empty when there is no `[vrrp]`.
    pub(super) fn vrrp(&mut self, raw: &ConfigToml) -> Vec<VrrpInstanceConfig> {
        let Some(vrrp) = raw.vrrp.as_ref() else {
            return Vec::new();
        };
        let v = vrrp.get_ref();
        let default_version = v
            .version
            .as_ref()
            .map(|ver| self.version(ver, "vrrp.version"));
        if v.instance.is_empty() {
            self.error(
                vrrp.span().start,
                "vrrp.instance",
                "no instances; add at least one [[vrrp.instance]]",
            );
        }
        let upstreams: Vec<&str> = raw
            .upstream
            .iter()
            .filter_map(|u| u.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
            .collect();
        let instances: Vec<VrrpInstanceConfig> = v
            .instance
            .iter()
            .enumerate()
            .map(|(i, inst)| self.vrrp_instance(i, inst, default_version, &upstreams))
            .collect();
        self.vrrp_cross_check(&v.instance, &instances);
        instances
    }

    fn version(&mut self, value: &Spanned<i64>, key: &str) -> VrrpVersion {
        match value.get_ref() {
            2 => VrrpVersion::V2,
            3 => VrrpVersion::V3,
            n => {
                self.error(
                    value.span().start,
                    key,
                    format!("{n} is not a VRRP version; allowed: 2, 3"),
                );
                VrrpVersion::V2
            }
        }
    }

    fn vrrp_instance(
        &mut self,
        index: usize,
        raw: &Spanned<VrrpInstanceToml>,
        default_version: Option<VrrpVersion>,
        upstreams: &[&str],
    ) -> VrrpInstanceConfig {
        let at = raw.span().start;
        let base = format!("vrrp.instance[{index}]");
        let key = |field: &str| format!("{base}.{field}");
        let r = raw.get_ref();

        let name = self.name(r.name.as_ref(), at, &key("name"), "name = \"VI_1\"");
        let initial_master = self.choice(
            r.state.as_ref(),
            &key("state"),
            "a VRRP start state",
            &[("MASTER", true), ("BACKUP", false)],
            "",
            false,
        );
        let interface = match self.required(
            r.interface.as_ref(),
            at,
            &key("interface"),
            "interface = \"eth0\"",
        ) {
            Some(i) => {
                self.interface_name(i, &key("interface"));
                i.get_ref().clone()
            }
            None => String::new(),
        };
        let vrid = match &r.virtual_router_id {
            Some(v) => self.int(Some(v), &key("virtual_router_id"), 1, 255, 1),
            None => {
                self.error(
                    at,
                    &key("virtual_router_id"),
                    "missing required key; for example: virtual_router_id = 51",
                );
                1
            }
        };
        let priority = self.int(r.priority.as_ref(), &key("priority"), 1, 255, 100);

        let vips = self.virtual_addresses(&base, at, r);
        let v6 = vips.first().is_some_and(|v| v.addr.is_ipv6());
        let version = match (&r.version, default_version) {
            (Some(ver), _) => self.version(ver, &key("version")),
            (None, Some(ver)) => ver,
            (None, None) => VrrpVersion::V2,
        };
        let version = if v6 {
            if let (Some(ver), VrrpVersion::V2) = (&r.version, version) {
                self.error(
                    ver.span().start,
                    &key("version"),
                    "VRRP version 2 is IPv4 only; IPv6 virtual addresses need version = 3",
                );
            }
            VrrpVersion::V3
        } else {
            version
        };

        let advert_int = self.advert_int(r.advert_int.as_ref(), &key("advert_int"), version);
        let preempt_delay = self
            .duration(
                r.preempt_delay.as_ref(),
                &key("preempt_delay"),
                Duration::ZERO,
                Duration::from_secs(1000),
            )
            .unwrap_or(Duration::ZERO);
        let auth_pass = self.authentication(&base, r, version);

        let unicast_src_ip = r.unicast_src_ip.as_ref().and_then(|s| {
            let addr = self.ip(s, &key("unicast_src_ip"))?;
            self.same_family(s, addr, v6, &key("unicast_src_ip"));
            Some(addr)
        });
        let mut unicast_peer = Vec::new();
        for (i, p) in r.unicast_peer.iter().enumerate() {
            let k = key(&format!("unicast_peer[{i}]"));
            if let Some(addr) = self.ip(p, &k) {
                self.same_family(p, addr, v6, &k);
                unicast_peer.push(addr);
            }
        }

        let track_interface = r
            .track_interface
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let k = format!("{base}.track_interface[{i}]");
                let tr = t.get_ref();
                let interface = match self.required(
                    tr.interface.as_ref(),
                    t.span().start,
                    &format!("{k}.interface"),
                    "interface = \"eth1\"",
                ) {
                    Some(n) => {
                        self.interface_name(n, &format!("{k}.interface"));
                        n.get_ref().clone()
                    }
                    None => String::new(),
                };
                TrackInterface {
                    interface,
                    weight: self.weight(tr.weight.as_ref(), &format!("{k}.weight")),
                }
            })
            .collect();
        let track_script = r
            .track_script
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let k = format!("{base}.track_script[{i}]");
                let tr = t.get_ref();
                let script = self
                    .required(
                        tr.script.as_ref(),
                        t.span().start,
                        &format!("{k}.script"),
                        "script = \"pidof haproxy\"",
                    )
                    .map(|s| s.get_ref().clone())
                    .unwrap_or_default();
                let interval = self
                    .duration(
                        tr.interval.as_ref(),
                        &format!("{k}.interval"),
                        Duration::from_millis(10),
                        Duration::from_secs(3600),
                    )
                    .unwrap_or(Duration::from_secs(1));
                let timeout = self
                    .duration(
                        tr.timeout.as_ref(),
                        &format!("{k}.timeout"),
                        Duration::from_millis(10),
                        Duration::from_secs(3600),
                    )
                    .unwrap_or(interval);
                TrackScript {
                    script,
                    interval,
                    timeout,
                    weight: self.weight(tr.weight.as_ref(), &format!("{k}.weight")),
                    rise: self.count(tr.rise.as_ref(), &format!("{k}.rise")),
                    fall: self.count(tr.fall.as_ref(), &format!("{k}.fall")),
                }
            })
            .collect();
        let track_upstream = r
            .track_upstream
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let k = format!("{base}.track_upstream[{i}]");
                let tr = t.get_ref();
                let upstream = match self.required(
                    tr.upstream.as_ref(),
                    t.span().start,
                    &format!("{k}.upstream"),
                    "upstream = \"web\"",
                ) {
                    Some(u) => {
                        if !upstreams.contains(&u.get_ref().as_str()) {
                            self.error(
                                u.span().start,
                                &format!("{k}.upstream"),
                                format!("no upstream named {:?}", u.get_ref()),
                            );
                        }
                        u.get_ref().clone()
                    }
                    None => String::new(),
                };
                TrackUpstream {
                    upstream,
                    weight: self.weight(tr.weight.as_ref(), &format!("{k}.weight")),
                }
            })
            .collect();

        let text = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().clone());
        let notify = Notify {
            master: text(&r.notify_master),
            backup: text(&r.notify_backup),
            fault: text(&r.notify_fault),
            stop: text(&r.notify_stop),
            any: text(&r.notify),
        };
        let garp_master_delay = self
            .duration(
                r.garp_master_delay.as_ref(),
                &key("garp_master_delay"),
                Duration::ZERO,
                Duration::from_secs(3600),
            )
            .unwrap_or(Duration::from_secs(5));
        let garp_master_repeat = self.int(
            r.garp_master_repeat.as_ref(),
            &key("garp_master_repeat"),
            1,
            255,
            5,
        );
        let garp_master_refresh = self
            .duration(
                r.garp_master_refresh.as_ref(),
                &key("garp_master_refresh"),
                Duration::ZERO,
                Duration::from_secs(86400),
            )
            .filter(|d| !d.is_zero());

        VrrpInstanceConfig {
            name,
            initial_master,
            interface,
            vrid: u8::try_from(vrid).unwrap_or(1),
            priority: u8::try_from(priority).unwrap_or(100),
            advert_int,
            version,
            nopreempt: r.nopreempt.unwrap_or(false),
            preempt_delay,
            auth_pass,
            virtual_ipaddress: vips,
            unicast_src_ip,
            unicast_peer,
            track_interface,
            track_script,
            track_upstream,
            notify,
            garp_master_delay,
            garp_master_repeat: u32::try_from(garp_master_repeat).unwrap_or(5),
            garp_master_refresh,
        }
    }

    fn interface_name(&mut self, name: &Spanned<String>, key: &str) {
        let n = name.get_ref();
        let valid = (1..=IFNAME_MAX).contains(&n.len())
            && !n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
            && n != "."
            && n != "..";
        if !valid {
            self.error(
                name.span().start,
                key,
                format!("{n:?} is not an interface name; use 1 to 15 characters without '/', ':' or spaces"),
            );
        }
    }

    /// `advert_int`: v2 whole seconds 1..=255; v3 10 ms steps from 10 ms to 40.95 s.
    fn advert_int(
        &mut self,
        value: Option<&Spanned<DurationToml>>,
        key: &str,
        version: VrrpVersion,
    ) -> Duration {
        let default = Duration::from_secs(1);
        let Some(value) = value else { return default };
        let (min, max) = match version {
            VrrpVersion::V2 => (Duration::from_secs(1), Duration::from_secs(255)),
            VrrpVersion::V3 => (Duration::from_millis(10), Duration::from_millis(40_950)),
        };
        let Some(d) = self.duration(Some(value), key, Duration::from_millis(1), max) else {
            return default;
        };
        let at = value.span().start;
        match version {
            VrrpVersion::V2 if d.subsec_nanos() != 0 || d < min => {
                self.error(
                    at,
                    key,
                    format!(
                        "{} is not a whole number of seconds; VRRP version 2 advertises whole seconds (1s..=255s); \
                         use version = 3 for sub-second intervals",
                        humantime::format_duration(d)
                    ),
                );
                default
            }
            VrrpVersion::V3 if d.as_nanos() % 10_000_000 != 0 || d < min => {
                self.error(
                    at,
                    key,
                    format!(
                        "{} is not a multiple of 10ms; VRRP version 3 advertises centiseconds (10ms..=40.95s)",
                        humantime::format_duration(d)
                    ),
                );
                default
            }
            _ => d,
        }
    }

    fn authentication(
        &mut self,
        base: &str,
        r: &VrrpInstanceToml,
        version: VrrpVersion,
    ) -> Option<crate::secret::Secret> {
        let auth = r.authentication.as_ref()?;
        let key = format!("{base}.authentication");
        if version == VrrpVersion::V3 {
            self.error(
                auth.span().start,
                &key,
                "VRRP version 3 has no authentication; remove it, or use version = 2",
            );
            return None;
        }
        let a = auth.get_ref();
        match &a.auth_type {
            Some(t) if t.get_ref() == "PASS" => {}
            Some(t) => {
                self.error(
                    t.span().start,
                    &format!("{key}.auth_type"),
                    format!(
                        "{:?} is not supported; allowed: PASS (IPsec AH is not)",
                        t.get_ref()
                    ),
                );
            }
            None => self.error(
                auth.span().start,
                &format!("{key}.auth_type"),
                "missing required key; for example: auth_type = \"PASS\"",
            ),
        }
        let pass = self.required(
            a.auth_pass.as_ref(),
            auth.span().start,
            &format!("{key}.auth_pass"),
            "auth_pass = \"secret\"",
        )?;
        let p = pass.get_ref();
        if p.is_empty() || p.len() > 8 {
            // The message gives the length, never the text: it is a secret.
            self.error(
                pass.span().start,
                &format!("{key}.auth_pass"),
                format!(
                    "must be 1 to 8 bytes (the field on the wire is 8 bytes), not {}{}",
                    p.len(),
                    if p.len() > 8 {
                        "; Keepalived uses only the first 8"
                    } else {
                        ""
                    }
                ),
            );
        }
        Some(crate::secret::Secret::new(p.as_str()))
    }

    fn virtual_addresses(
        &mut self,
        base: &str,
        at: usize,
        r: &VrrpInstanceToml,
    ) -> Vec<VirtualAddress> {
        let key = format!("{base}.virtual_ipaddress");
        if r.virtual_ipaddress.is_empty() {
            self.error(
                at,
                &key,
                "missing required key; for example: virtual_ipaddress = [\"10.0.0.50/24\"]",
            );
        }
        let mut out: Vec<VirtualAddress> = Vec::new();
        for (i, v) in r.virtual_ipaddress.iter().enumerate() {
            let k = format!("{key}[{i}]");
            let text = v.get_ref();
            let (addr, len) = match text.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (text.as_str(), None),
            };
            let Ok(addr) = addr.parse::<IpAddr>() else {
                self.error(
                    v.span().start,
                    &k,
                    format!("{text:?} is not an address; expected IP or IP/prefix, such as \"10.0.0.50/24\" or \"fd00::50/64\""),
                );
                continue;
            };
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix_len = match len.map(str::parse::<u8>) {
                None => max,
                Some(Ok(l)) if l <= max => l,
                Some(_) => {
                    self.error(
                        v.span().start,
                        &k,
                        format!("{text:?}: the prefix length must be 0..={max}"),
                    );
                    max
                }
            };
            if let Some(first) = out.first() {
                if first.addr.is_ipv4() != addr.is_ipv4() {
                    self.error(
                        v.span().start,
                        &k,
                        "an instance's addresses are all IPv4 or all IPv6; use a second instance for the other family",
                    );
                    continue;
                }
            }
            if out.iter().any(|o| o.addr == addr) {
                self.error(v.span().start, &k, format!("{addr} is listed twice"));
                continue;
            }
            out.push(VirtualAddress { addr, prefix_len });
        }
        if out.len() > 255 {
            self.error(at, &key, "at most 255 addresses fit in an advert");
        }
        out
    }

    fn ip(&mut self, value: &Spanned<String>, key: &str) -> Option<IpAddr> {
        match value.get_ref().parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    value.span().start,
                    key,
                    format!("{:?} is not an IP address", value.get_ref()),
                );
                None
            }
        }
    }

    fn same_family(&mut self, value: &Spanned<String>, addr: IpAddr, v6: bool, key: &str) {
        if addr.is_ipv6() != v6 {
            self.error(
                value.span().start,
                key,
                "must be of the same family as virtual_ipaddress",
            );
        }
    }

    fn weight(&mut self, value: Option<&Spanned<i64>>, key: &str) -> i32 {
        i32::try_from(self.int(value, key, -253, 253, 0)).unwrap_or(0)
    }

    fn count(&mut self, value: Option<&Spanned<i64>>, key: &str) -> u32 {
        u32::try_from(self.int(value, key, 1, 1000, 1)).unwrap_or(1)
    }

    /// Unique names, and one instance per VRID, interface and family (two would answer each
    /// other's adverts).
    fn vrrp_cross_check(
        &mut self,
        raw: &[Spanned<VrrpInstanceToml>],
        built: &[VrrpInstanceConfig],
    ) {
        let names = raw.iter().map(|i| i.get_ref().name.as_ref());
        self.unique_names("vrrp.instance", names);
        let mut seen: HashMap<(String, u8, bool), usize> = HashMap::new();
        for (i, (r, b)) in raw.iter().zip(built).enumerate() {
            let Some(vrid) = r.get_ref().virtual_router_id.as_ref() else {
                continue;
            };
            let v6 = b
                .virtual_ipaddress
                .first()
                .is_some_and(|v| v.addr.is_ipv6());
            let k = (b.interface.clone(), b.vrid, v6);
            if let Some(first) = seen.get(&k) {
                self.error(
                    vrid.span().start,
                    &format!("vrrp.instance[{i}].virtual_router_id"),
                    format!(
                        "VRID {} on {} is already used by vrrp.instance[{first}]",
                        b.vrid, b.interface
                    ),
                );
            } else {
                seen.insert(k, i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::parse;
    use crate::config::vrrp::{TrackInterface, VirtualAddress, VrrpVersion};

    /// A node that only runs VRRP: no listener needed.
    const BASE: &str = "[vrrp]\n[[vrrp.instance]]\nname = \"VI_51\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"10.99.0.50/24\"]\n";

    fn errors(text: &str) -> Vec<String> {
        match parse(text, "b.toml") {
            Ok(c) => panic!("expected errors, got {c:#?}"),
            Err(d) => d.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_keepalived_like_instance_reads_with_defaults() {
        let text = format!(
            "{BASE}state = \"MASTER\"\npriority = 150\nauthentication = {{ auth_type = \"PASS\", auth_pass = \"secret\" }}\n\
             track_interface = [{{ interface = \"eth1\", weight = -20 }}]\nnotify_master = \"/bin/true\"\n"
        );
        let cfg = parse(&text, "b.toml").expect("valid");
        assert!(cfg.listeners.is_empty());
        let i = &cfg.vrrp[0];
        assert_eq!(i.name, "VI_51");
        assert!(i.initial_master);
        assert_eq!(i.vrid, 51);
        assert_eq!(i.priority, 150);
        assert_eq!(i.version, VrrpVersion::V2);
        assert_eq!(i.advert_int, Duration::from_secs(1));
        assert_eq!(i.auth_pass.as_ref().map(|s| s.expose()), Some("secret"));
        assert_eq!(
            i.virtual_ipaddress,
            vec![VirtualAddress {
                addr: "10.99.0.50".parse().expect("ip"),
                prefix_len: 24
            }]
        );
        assert_eq!(
            i.track_interface,
            vec![TrackInterface {
                interface: "eth1".into(),
                weight: -20
            }]
        );
        assert_eq!(i.garp_master_delay, Duration::from_secs(5));
        assert_eq!(i.garp_master_repeat, 5);
        assert_eq!(i.notify.master.as_deref(), Some("/bin/true"));
    }

    #[test]
    fn ipv6_is_always_version_3_and_sub_second_needs_it() {
        let text = "[vrrp]\n[[vrrp.instance]]\nname = \"v6\"\ninterface = \"eth0\"\nvirtual_router_id = 5\nvirtual_ipaddress = [\"fd00::50\"]\nadvert_int = \"100ms\"\n";
        let cfg = parse(text, "b.toml").expect("valid");
        assert_eq!(cfg.vrrp[0].version, VrrpVersion::V3);
        assert_eq!(cfg.vrrp[0].virtual_ipaddress[0].prefix_len, 128);
        assert_eq!(cfg.vrrp[0].advert_int, Duration::from_millis(100));
    }

    #[test]
    fn every_vrrp_mistake_is_reported_with_its_position() {
        let text = "[vrrp]\nversion = 4\n[[vrrp.instance]]\nname = \"a b\"\ninterface = \"eth0/1\"\nvirtual_router_id = 0\npriority = 256\nadvert_int = \"1500ms\"\nvirtual_ipaddress = [\"10.0.0.1/33\", \"fd00::1\", \"x\"]\nauthentication = { auth_type = \"AH\", auth_pass = \"0123456789\" }\nunicast_peer = [\"fd00::2\"]\ntrack_upstream = [{ upstream = \"nope\" }]\ntrack_script = [{ script = \"true\", rise = 0 }]\n";
        assert_eq!(
            errors(text),
            vec![
                "b.toml:2:11: vrrp.version: 4 is not a VRRP version; allowed: 2, 3",
                "b.toml:4:8: vrrp.instance[0].name: \"a b\" is not a valid name; use 1 to 64 letters, digits, '-', '_' or '.'",
                "b.toml:5:13: vrrp.instance[0].interface: \"eth0/1\" is not an interface name; use 1 to 15 characters without '/', ':' or spaces",
                "b.toml:6:21: vrrp.instance[0].virtual_router_id: 0 is out of range; allowed: 1..=255",
                "b.toml:7:12: vrrp.instance[0].priority: 256 is out of range; allowed: 1..=255",
                "b.toml:8:14: vrrp.instance[0].advert_int: 1s 500ms is not a whole number of seconds; VRRP version 2 advertises whole seconds (1s..=255s); use version = 3 for sub-second intervals",
                "b.toml:9:22: vrrp.instance[0].virtual_ipaddress[0]: \"10.0.0.1/33\": the prefix length must be 0..=32",
                "b.toml:9:37: vrrp.instance[0].virtual_ipaddress[1]: an instance's addresses are all IPv4 or all IPv6; use a second instance for the other family",
                "b.toml:9:48: vrrp.instance[0].virtual_ipaddress[2]: \"x\" is not an address; expected IP or IP/prefix, such as \"10.0.0.50/24\" or \"fd00::50/64\"",
                "b.toml:10:32: vrrp.instance[0].authentication.auth_type: \"AH\" is not supported; allowed: PASS (IPsec AH is not)",
                "b.toml:10:50: vrrp.instance[0].authentication.auth_pass: must be 1 to 8 bytes (the field on the wire is 8 bytes), not 10; Keepalived uses only the first 8",
                "b.toml:11:17: vrrp.instance[0].unicast_peer[0]: must be of the same family as virtual_ipaddress",
                "b.toml:12:32: vrrp.instance[0].track_upstream[0].upstream: no upstream named \"nope\"",
                "b.toml:13:43: vrrp.instance[0].track_script[0].rise: 0 is out of range; allowed: 1..=1000",
            ]
        );
    }

    #[test]
    fn v3_refuses_authentication_and_odd_intervals() {
        let text = format!("{BASE}version = 3\nadvert_int = \"15ms\"\nauthentication = {{ auth_type = \"PASS\", auth_pass = \"x\" }}\n");
        assert_eq!(
            errors(&text),
            vec![
                "b.toml:8:14: vrrp.instance[0].advert_int: 15ms is not a multiple of 10ms; VRRP version 3 advertises centiseconds (10ms..=40.95s)",
                "b.toml:9:18: vrrp.instance[0].authentication: VRRP version 3 has no authentication; remove it, or use version = 2",
            ]
        );
    }

    #[test]
    fn duplicate_names_and_vrids_are_refused() {
        let text = format!("{BASE}{}", &BASE[7..]);
        assert_eq!(
            errors(&text),
            vec![
                "b.toml:8:8: vrrp.instance[1].name: duplicate vrrp.instance name \"VI_51\" (first defined at line 3)",
                "b.toml:10:21: vrrp.instance[1].virtual_router_id: VRID 51 on eth0 is already used by vrrp.instance[0]",
            ]
        );
    }
}
