//! High availability: VRRP (RFC 5798 v3, RFC 3768 v2), on the wire as Keepalived 2.2 speaks it,
//! so a ballast node can replace one Keepalived node of a `vrrp_instance` group at a time.
//!
//! This module owns, per `[[vrrp.instance]]`: the protocol state machine, the adverts sent and
//! received, the virtual addresses on the interface (added as MASTER, removed otherwise and at
//! exit), gratuitous ARP / unsolicited NA, tracking (interfaces, scripts, upstreams) and the
//! `notify_*` commands. It does not own listeners: a listener bound to a VIP binds with
//! IP_FREEBIND (see `listener::socket`) and simply starts receiving traffic when this node adds
//! the address.
//!
//! The codec and the state machine are written here by hand because no maintained Rust crate
//! implements VRRP; both are pure (no I/O, time injected) and tested on their own:
//!
//! | file | owns |
//! |---|---|
//! | `packet.rs` | encode/decode v2/v3, checksums with the v3 pseudo-header, every drop reason |
//! | `machine.rs` | the RFC state machine: inputs and instants in, actions out |
//! | `socket.rs` | raw IP protocol 112 sockets: multicast or unicast, TTL 255, per interface |
//! | `addr.rs` | VIPs through rtnetlink, interface state, gratuitous ARP and unsolicited NA |
//! | `mod.rs` | one task per instance wiring them together; tracking, notify, counters |
//!
//! Flow of one instance task: set up (interface index, source address, sockets; stale VIPs left
//! by a crash are removed, as Keepalived does) → `Startup` → a loop over received adverts, the
//! machine's deadline, announcement timers and a 100 ms tracking tick → on shutdown a priority-0
//! advert (when MASTER) and the VIPs removed, before the listeners stop.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::vrrp::{TrackScript, VrrpInstanceConfig};

pub mod addr;
pub mod machine;
pub mod packet;
pub mod socket;

use machine::{Action, Input, Machine, Params, State};
use packet::{Advert, Auth, DropReason, Expect, Version};

/// "This upstream has a server that can take traffic": the hook `track_upstream` calls.
pub type UpstreamProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// How often tracked interfaces and upstreams are looked at.
const TRACK_TICK: Duration = Duration::from_millis(100);

/// Counters of one instance. All monotonic.
#[derive(Debug, Default)]
pub struct InstanceStats {
    /// Adverts sent (each destination counts once).
    pub adverts_sent: AtomicU64,
    /// Valid adverts received for this VRID.
    pub adverts_received: AtomicU64,
    /// Priority-0 adverts received.
    pub priority_zero_received: AtomicU64,
    /// Adverts that could not be sent.
    pub send_errors: AtomicU64,
    /// Times this instance became MASTER.
    pub became_master: AtomicU64,
    /// Times it became BACKUP.
    pub became_backup: AtomicU64,
    /// Times it entered FAULT.
    pub became_fault: AtomicU64,
    /// Netlink failures adding or removing a VIP.
    pub address_errors: AtomicU64,
    /// Received packets dropped, by [`DropReason::index`].
    pub drops: [AtomicU64; DropReason::ALL.len()],
}

/// What can be seen of a running instance.
#[derive(Debug)]
pub struct InstanceStatus {
    /// Its configuration.
    pub config: VrrpInstanceConfig,
    /// Counters.
    pub stats: InstanceStats,
    state: AtomicU8,
    priority: AtomicU8,
}

impl InstanceStatus {
    fn new(config: VrrpInstanceConfig) -> InstanceStatus {
        let priority = config.priority;
        InstanceStatus {
            config,
            stats: InstanceStats::default(),
            state: AtomicU8::new(0),
            priority: AtomicU8::new(priority),
        }
    }

    /// The protocol state now.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            1 => State::Backup,
            2 => State::Master,
            3 => State::Fault,
            _ => State::Init,
        }
    }

    fn set_state(&self, s: State) {
        let n = match s {
            State::Init => 0,
            State::Backup => 1,
            State::Master => 2,
            State::Fault => 3,
        };
        self.state.store(n, Ordering::Relaxed);
    }

    /// The effective priority now (base plus tracking weights).
    pub fn priority(&self) -> u8 {
        self.priority.load(Ordering::Relaxed)
    }

    /// The instance as the admin API shows it: configuration, state and counters.
    pub fn view(&self) -> serde_json::Value {
        let c = &self.config;
        let st = &self.stats;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let drops: serde_json::Map<String, serde_json::Value> = self
            .drops()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        serde_json::json!({
            "name": c.name,
            "interface": c.interface,
            "virtual_router_id": c.vrid,
            "state": self.state().as_str(),
            "priority": self.priority(),
            "base_priority": c.priority,
            "advert_int_ms": u64::try_from(c.advert_int.as_millis()).unwrap_or(u64::MAX),
            "virtual_ipaddress": c
                .virtual_ipaddress
                .iter()
                .map(|v| format!("{}/{}", v.addr, v.prefix_len))
                .collect::<Vec<_>>(),
            "adverts_sent": n(&st.adverts_sent),
            "adverts_received": n(&st.adverts_received),
            "priority_zero_received": n(&st.priority_zero_received),
            "send_errors": n(&st.send_errors),
            "became_master": n(&st.became_master),
            "became_backup": n(&st.became_backup),
            "became_fault": n(&st.became_fault),
            "address_errors": n(&st.address_errors),
            "dropped": drops,
        })
    }

    /// Drops so far, by reason, leaving out reasons never seen.
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str(),
                    self.stats.drops[r.index()].load(Ordering::Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// The running VRRP instances.
#[derive(Debug)]
pub struct Vrrp {
    instances: Vec<Arc<InstanceStatus>>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl Vrrp {
    /// Starts one task per instance. `probe` gives the "has a usable server" check for an
    /// upstream name (for `track_upstream`); an upstream it does not know counts as down. Must be
    /// called inside a tokio runtime.
    pub fn start(
        configs: &[VrrpInstanceConfig],
        probe: impl Fn(&str) -> Option<UpstreamProbe>,
    ) -> Vrrp {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut instances = Vec::with_capacity(configs.len());
        for cfg in configs {
            let status = Arc::new(InstanceStatus::new(cfg.clone()));
            let probes: Vec<(String, UpstreamProbe, i32)> = cfg
                .track_upstream
                .iter()
                .map(|t| {
                    let p = probe(&t.upstream).unwrap_or_else(|| Arc::new(|| false));
                    (t.upstream.clone(), p, t.weight)
                })
                .collect();
            tasks.spawn(run(Arc::clone(&status), probes, stop.clone()));
            instances.push(status);
        }
        Vrrp {
            instances,
            stop,
            tasks,
        }
    }

    /// The instances, in configuration order.
    pub fn instances(&self) -> &[Arc<InstanceStatus>] {
        &self.instances
    }

    /// Clean stop: each MASTER sends a priority-0 advert (so its BACKUP takes over after
    /// Skew_Time rather than Master_Down_Interval) and removes its VIPs; `notify_stop` runs.
    /// Bounded: gives up after 5 s.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }

    /// One line per instance: state, priorities, counters, drops by reason.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for i in &self.instances {
            let s = &i.stats;
            let c = &i.config;
            let _ = write!(
                out,
                "vrrp {} vrid {} on {}: {} priority {} (base {}), sent {}, received {}, prio0 received {}, master {}x, backup {}x, fault {}x, send errors {}, address errors {}",
                c.name,
                c.vrid,
                c.interface,
                i.state().as_str(),
                i.priority(),
                c.priority,
                s.adverts_sent.load(Ordering::Relaxed),
                s.adverts_received.load(Ordering::Relaxed),
                s.priority_zero_received.load(Ordering::Relaxed),
                s.became_master.load(Ordering::Relaxed),
                s.became_backup.load(Ordering::Relaxed),
                s.became_fault.load(Ordering::Relaxed),
                s.send_errors.load(Ordering::Relaxed),
                s.address_errors.load(Ordering::Relaxed),
            );
            let drops = i.drops();
            if !drops.is_empty() {
                let list: Vec<String> = drops.iter().map(|(r, n)| format!("{r}={n}")).collect();
                let _ = write!(out, ", dropped {}", list.join(" "));
            }
            out.push('\n');
        }
        out
    }
}

// === the instance task ===

/// What an instance needs from the system, set up once.
struct Io {
    ifindex: u32,
    netlink: addr::Netlink,
    socket: socket::VrrpSocket,
    announcer: addr::Announcer,
}

impl Io {
    fn open(cfg: &VrrpInstanceConfig) -> std::io::Result<Io> {
        let ifindex = addr::ifindex(&cfg.interface)?;
        let mut netlink = addr::Netlink::open()?;
        // A crash (SIGKILL) leaves the VIPs configured; Keepalived removes them at start too.
        for vip in &cfg.virtual_ipaddress {
            netlink.remove(ifindex, vip)?;
        }
        let v6 = cfg
            .virtual_ipaddress
            .first()
            .is_some_and(|v| v.addr.is_ipv6());
        let src = match cfg.unicast_src_ip {
            Some(a) => a,
            None => {
                let vips: Vec<IpAddr> = cfg.virtual_ipaddress.iter().map(|v| v.addr).collect();
                netlink
                    .addresses(ifindex)?
                    .into_iter()
                    .find(|a| {
                        !vips.contains(&a.addr)
                            && match a.addr {
                                IpAddr::V4(_) => !v6 && !a.secondary,
                                IpAddr::V6(x) => v6 && x.is_unicast_link_local(),
                            }
                    })
                    .map(|a| a.addr)
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::AddrNotAvailable,
                            if v6 {
                                "the interface has no IPv6 link-local address yet"
                            } else {
                                "the interface has no IPv4 address"
                            },
                        )
                    })?
            }
        };
        let socket = socket::VrrpSocket::open(&cfg.interface, ifindex, src, &cfg.unicast_peer)?;
        let announcer = addr::Announcer::open(&cfg.interface, ifindex, &cfg.virtual_ipaddress)?;
        Ok(Io {
            ifindex,
            netlink,
            socket,
            announcer,
        })
    }
}

/// One instance, running.
struct Instance {
    status: Arc<InstanceStatus>,
    io: Io,
    machine: Machine,
    expect: Expect,
    template: Advert,
    /// When the next gratuitous ARP batch is due (second batch, then refreshes).
    next_announce: Option<Instant>,
    /// Drop reasons already logged at warn level (the rest go to debug).
    warned: u32,
}

async fn run(
    status: Arc<InstanceStatus>,
    probes: Vec<(String, UpstreamProbe, i32)>,
    stop: CancellationToken,
) {
    let cfg = status.config.clone();
    let io = loop {
        match Io::open(&cfg) {
            Ok(io) => break io,
            Err(e) => {
                tracing::warn!(instance = %cfg.name, interface = %cfg.interface, error = %e,
                    "VRRP instance cannot start yet; retrying every second");
                status.set_state(State::Fault);
                tokio::select! {
                    () = stop.cancelled() => {
                        status.set_state(State::Init);
                        return;
                    }
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let src = io.socket.src();
    let addrs: Vec<IpAddr> = cfg.virtual_ipaddress.iter().map(|v| v.addr).collect();
    let auth = cfg
        .auth_pass
        .as_ref()
        .map_or(Auth::None, |p| Auth::pass(p.expose()));
    let interval = match cfg.version {
        Version::V2 => u16::try_from(cfg.advert_int.as_secs()).unwrap_or(1),
        Version::V3 => u16::try_from(cfg.advert_int.as_millis() / 10).unwrap_or(100),
    };
    let advert_int_cs = u32::try_from(cfg.advert_int.as_millis() / 10).unwrap_or(100);
    let mut inst = Instance {
        machine: Machine::new(Params {
            version: cfg.version,
            priority: cfg.priority,
            advert_int_cs,
            preempt: !cfg.nopreempt,
            preempt_delay: cfg.preempt_delay,
            local_addr: src,
        }),
        expect: Expect {
            version: cfg.version,
            vrid: cfg.vrid,
            auth,
            addrs: addrs.clone(),
            interval_v2: interval,
        },
        template: Advert {
            version: cfg.version,
            vrid: cfg.vrid,
            priority: cfg.priority,
            interval,
            addrs,
            auth,
        },
        status,
        io,
        next_announce: None,
        warned: 0,
    };
    tracing::info!(instance = %cfg.name, interface = %cfg.interface, vrid = cfg.vrid,
        version = cfg.version.number(), src = %src, priority = cfg.priority,
        advert_int = ?cfg.advert_int, "VRRP instance starting");

    let scripts = ScriptStates::spawn(&cfg.track_script, &stop);
    let mut tracked = track(&cfg, &scripts, &probes);
    let now = Instant::now();
    let acts = inst.machine.handle(
        now,
        Input::Track {
            delta: tracked.0,
            fault: tracked.1,
        },
    );
    inst.apply(acts, now);
    let acts = inst.machine.handle(now, Input::Startup);
    inst.apply(acts, now);

    let mut tick = tokio::time::interval(TRACK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 2048];
    loop {
        let deadline = inst.machine.deadline();
        let announce = inst.next_announce;
        tokio::select! {
            () = stop.cancelled() => break,
            r = inst.io.socket.recv(&mut buf) => {
                let now = Instant::now();
                match r {
                    Ok(Ok((meta, msg))) => {
                        let msg = msg.to_vec();
                        inst.received(now, meta, &msg);
                    }
                    Ok(Err(reason)) => inst.dropped(reason, None),
                    Err(e) => {
                        tracing::warn!(instance = %cfg.name, error = %e, "VRRP receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            () = sleep_until(deadline) => {
                let now = Instant::now();
                let acts = inst.machine.handle(now, Input::Timer);
                inst.apply(acts, now);
            }
            () = sleep_until(announce) => {
                let now = Instant::now();
                inst.announce_timer(now);
            }
            _ = tick.tick() => {
                let t = track(&cfg, &scripts, &probes);
                if t != tracked {
                    tracing::info!(instance = %cfg.name, weight_sum = t.0, fault = t.1,
                        priority = (i32::from(cfg.priority) + t.0).clamp(1, 254), "VRRP tracking changed");
                    tracked = t;
                    let now = Instant::now();
                    let acts = inst.machine.handle(now, Input::Track { delta: t.0, fault: t.1 });
                    inst.apply(acts, now);
                }
            }
        }
    }
    let now = Instant::now();
    let acts = inst.machine.handle(now, Input::Shutdown);
    inst.apply(acts, now);
    if let Some(cmd) = &cfg.notify.stop {
        let _ = tokio::time::timeout(Duration::from_secs(2), run_command(cmd, &[])).await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

impl Instance {
    fn cfg(&self) -> &VrrpInstanceConfig {
        &self.status.config
    }

    fn dropped(&mut self, reason: DropReason, src: Option<IpAddr>) {
        self.status.stats.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
        // Other routers' VRIDs on the same link are normal traffic, not a problem.
        if reason == DropReason::Vrid {
            return;
        }
        let bit = 1u32 << reason.index();
        if self.warned & bit == 0 {
            self.warned |= bit;
            tracing::warn!(instance = %self.cfg().name, reason = reason.as_str(), src = ?src,
                "VRRP packet dropped (further drops for this reason are logged at debug level)");
        } else {
            tracing::debug!(instance = %self.cfg().name, reason = reason.as_str(), src = ?src, "VRRP packet dropped");
        }
    }

    fn received(&mut self, now: Instant, meta: socket::Received, msg: &[u8]) {
        if meta.ttl != packet::TTL {
            return self.dropped(DropReason::Ttl, Some(meta.src));
        }
        if meta.src == self.io.socket.src() {
            return self.dropped(DropReason::Own, Some(meta.src));
        }
        let peers = &self.cfg().unicast_peer;
        if !peers.is_empty() && !peers.contains(&meta.src) {
            return self.dropped(DropReason::Peer, Some(meta.src));
        }
        let adv = match packet::decode(msg, meta.src, meta.dst) {
            Ok(a) => a,
            Err(r) => return self.dropped(r, Some(meta.src)),
        };
        if adv.vrid != self.cfg().vrid {
            return self.dropped(DropReason::Vrid, Some(meta.src));
        }
        if let Err(r) = packet::check(&adv, &self.expect) {
            return self.dropped(r, Some(meta.src));
        }
        let stats = &self.status.stats;
        stats.adverts_received.fetch_add(1, Ordering::Relaxed);
        if adv.priority == 0 {
            stats.priority_zero_received.fetch_add(1, Ordering::Relaxed);
        }
        let acts = self.machine.handle(
            now,
            Input::Advert {
                priority: adv.priority,
                interval_cs: adv.interval_cs(),
                src: meta.src,
            },
        );
        self.apply(acts, now);
    }

    fn apply(&mut self, acts: Vec<Action>, now: Instant) {
        self.status
            .priority
            .store(self.machine.effective_priority(), Ordering::Relaxed);
        for act in acts {
            match act {
                Action::Send(priority) => {
                    let advert = Advert {
                        priority,
                        ..self.template.clone()
                    };
                    let stats = &self.status.stats;
                    match self.io.socket.send(&advert) {
                        Ok(()) => stats.adverts_sent.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tracing::debug!(instance = %self.cfg().name, error = %e, "VRRP advert not sent");
                            stats.send_errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                Action::AddVips | Action::RemoveVips => {
                    let add = act == Action::AddVips;
                    for vip in &self.status.config.virtual_ipaddress {
                        let r = if add {
                            self.io.netlink.add(self.io.ifindex, vip)
                        } else {
                            self.io.netlink.remove(self.io.ifindex, vip)
                        };
                        if let Err(e) = r {
                            self.status
                                .stats
                                .address_errors
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::error!(instance = %self.status.config.name, vip = %vip.addr,
                                error = %e, "cannot {} virtual address", if add { "add" } else { "remove" });
                        }
                    }
                    if !add {
                        self.next_announce = None;
                    }
                }
                Action::Announce => {
                    self.announce_batch();
                    let delay = self.cfg().garp_master_delay;
                    self.next_announce = if delay.is_zero() {
                        self.cfg().garp_master_refresh.map(|r| now + r)
                    } else {
                        Some(now + delay)
                    };
                }
                Action::Became(state) => self.became(state),
            }
        }
    }

    fn announce_batch(&self) {
        for _ in 0..self.cfg().garp_master_repeat {
            if let Err(e) = self.io.announcer.announce(&self.cfg().virtual_ipaddress) {
                tracing::debug!(instance = %self.cfg().name, error = %e, "gratuitous ARP / NA not sent");
                break;
            }
        }
    }

    fn announce_timer(&mut self, now: Instant) {
        if self.machine.state() != State::Master {
            self.next_announce = None;
            return;
        }
        self.announce_batch();
        self.next_announce = self.cfg().garp_master_refresh.map(|r| now + r);
    }

    fn became(&mut self, state: State) {
        self.status.set_state(state);
        let stats = &self.status.stats;
        let cfg = &self.status.config;
        let prio = self.machine.effective_priority();
        tracing::info!(instance = %cfg.name, vrid = cfg.vrid, priority = prio,
            "({}) Entering {} STATE", cfg.name, state.as_str());
        let cmd = match state {
            State::Master => {
                stats.became_master.fetch_add(1, Ordering::Relaxed);
                &cfg.notify.master
            }
            State::Backup => {
                stats.became_backup.fetch_add(1, Ordering::Relaxed);
                &cfg.notify.backup
            }
            State::Fault => {
                stats.became_fault.fetch_add(1, Ordering::Relaxed);
                &cfg.notify.fault
            }
            State::Init => return,
        };
        if let Some(cmd) = cmd {
            spawn_command(cmd.clone(), Vec::new());
        }
        if let Some(any) = &cfg.notify.any {
            spawn_command(
                any.clone(),
                vec![
                    "INSTANCE".to_owned(),
                    cfg.name.clone(),
                    state.as_str().to_owned(),
                    prio.to_string(),
                ],
            );
        }
    }
}

// === tracking ===

/// (sum of weights that apply, a weight-0 object is down) under Keepalived's rule: weight 0 →
/// FAULT while down; negative → added while down; positive → added while up. The instance's own
/// interface going down is always a FAULT.
fn track(
    cfg: &VrrpInstanceConfig,
    scripts: &ScriptStates,
    probes: &[(String, UpstreamProbe, i32)],
) -> (i32, bool) {
    let mut delta = 0;
    let mut fault = !addr::link_up(&cfg.interface);
    let mut apply = |up: bool, weight: i32| match (up, weight) {
        (false, 0) => fault = true,
        (false, w) if w < 0 => delta += w,
        (true, w) if w > 0 => delta += w,
        _ => {}
    };
    for t in &cfg.track_interface {
        apply(addr::link_up(&t.interface), t.weight);
    }
    for (state, t) in scripts.states.iter().zip(&cfg.track_script) {
        apply(state.load(Ordering::Relaxed), t.weight);
    }
    for (_, probe, weight) in probes {
        apply(probe(), *weight);
    }
    (delta, fault)
}

/// The up/down state of each `track_script`, updated by one task per script.
struct ScriptStates {
    states: Vec<Arc<AtomicBool>>,
}

impl ScriptStates {
    fn spawn(scripts: &[TrackScript], stop: &CancellationToken) -> ScriptStates {
        let states = scripts
            .iter()
            .map(|s| {
                // Up until proven down, as Keepalived does without `init_fail`.
                let state = Arc::new(AtomicBool::new(true));
                tokio::spawn(script_loop(s.clone(), Arc::clone(&state), stop.clone()));
                state
            })
            .collect();
        ScriptStates { states }
    }
}

/// Runs `script` every `interval`; `rise` successes in a row make it up, `fall` failures down.
async fn script_loop(script: TrackScript, state: Arc<AtomicBool>, stop: CancellationToken) {
    let mut ok_streak = 0u32;
    let mut fail_streak = 0u32;
    loop {
        let ok = tokio::select! {
            () = stop.cancelled() => return,
            r = tokio::time::timeout(script.timeout, run_command(&script.script, &[])) => {
                matches!(r, Ok(Some(true)))
            }
        };
        if ok {
            ok_streak += 1;
            fail_streak = 0;
            if ok_streak >= script.rise && !state.swap(true, Ordering::Relaxed) {
                tracing::info!(script = %script.script, "VRRP track script succeeded");
            }
        } else {
            fail_streak += 1;
            ok_streak = 0;
            if fail_streak >= script.fall && state.swap(false, Ordering::Relaxed) {
                tracing::warn!(script = %script.script, "VRRP track script failed");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(script.interval) => {}
        }
    }
}

/// Runs `cmd` with `/bin/sh -c` (and `args` as `$1…`); `Some(success)` when it ran to the end.
/// The child is killed if the future is dropped (a timeout).
async fn run_command(cmd: &str, args: &[String]) -> Option<bool> {
    let line = if args.is_empty() {
        cmd.to_owned()
    } else {
        format!("{cmd} \"$@\"")
    };
    let status = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(line)
        .arg("ballast-vrrp")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await;
    match status {
        Ok(s) => Some(s.success()),
        Err(e) => {
            tracing::warn!(command = cmd, error = %e, "cannot run command");
            None
        }
    }
}

/// Runs a notify command in the background, bounded to a minute.
fn spawn_command(cmd: String, args: Vec<String>) {
    tokio::spawn(async move {
        match tokio::time::timeout(Duration::from_secs(60), run_command(&cmd, &args)).await {
            Ok(Some(true)) | Ok(None) => {}
            Ok(Some(false)) => tracing::warn!(command = %cmd, "notify command failed"),
            Err(_) => tracing::warn!(command = %cmd, "notify command killed after 60 s"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn instance(extra: &str) -> VrrpInstanceConfig {
        let text = format!(
            "[vrrp]\n[[vrrp.instance]]\nname = \"t\"\ninterface = \"lo\"\nvirtual_router_id = 1\n\
             virtual_ipaddress = [\"10.0.0.1\"]\n{extra}\n"
        );
        match Config::from_str(&text, "t.toml") {
            Ok(c) => c.vrrp.into_iter().next().expect("one instance"),
            Err(e) => panic!("{e}"),
        }
    }

    fn scripts(states: &[bool]) -> ScriptStates {
        ScriptStates {
            states: states
                .iter()
                .map(|s| Arc::new(AtomicBool::new(*s)))
                .collect(),
        }
    }

    #[test]
    fn weights_follow_keepalived_rules() {
        let cfg = instance(
            "track_interface = [{ interface = \"lo\", weight = 10 }, { interface = \"no-such-if0\", weight = -20 }]\n\
             track_script = [{ script = \"true\", weight = 5 }, { script = \"false\", weight = -7 }]",
        );
        let probes: Vec<(String, UpstreamProbe, i32)> = vec![
            ("up".into(), Arc::new(|| true), 3),
            ("down".into(), Arc::new(|| false), -30),
        ];
        // lo up +10, missing interface -20, script up +5, script down -7, upstream up +3,
        // upstream down -30.
        assert_eq!(track(&cfg, &scripts(&[true, false]), &probes), (-39, false));
        // A negative weight while up and a positive one while down count nothing.
        assert_eq!(track(&cfg, &scripts(&[false, true]), &[]), (-10, false));
    }

    #[test]
    fn weight_zero_down_and_own_interface_down_are_faults() {
        let cfg = instance("track_interface = [{ interface = \"no-such-if0\" }]");
        assert_eq!(track(&cfg, &scripts(&[]), &[]), (0, true));
        let mut cfg = instance("");
        assert_eq!(track(&cfg, &scripts(&[]), &[]), (0, false));
        cfg.interface = "no-such-if0".into();
        assert_eq!(track(&cfg, &scripts(&[]), &[]), (0, true));
    }
}
