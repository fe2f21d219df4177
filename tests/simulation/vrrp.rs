//! VRRP: 2–4 routers running [`Machine`] on a simulated broadcast medium, driven by a virtual
//! clock. Adverts go over the wire as bytes made by the crate's own encoder and are decoded and
//! checked by each receiver, as on a real link.
//!
//! A run alternates chaos and calm. Chaos: per-packet loss, partitions and heals, crashes (no
//! priority-0 advert) and restarts, clean shutdowns (priority 0), tracking changes of priority,
//! FAULT on and off. Calm: one connected network without loss (delay still random, below the
//! advert interval), dead routers restarted or left dead, then a settle time.
//!
//! Invariants, after every step:
//! * state changes only along RFC 5798 §6.4's edges (plus FAULT), each caused by the input the
//!   RFC names (Backup → Master by the timer, Master → Backup by a better advert…);
//! * a router holds the virtual addresses exactly while it is Master; a router in FAULT, shut
//!   down or crashed is never Master;
//! * a Master that hears a better advert steps down, so two Masters never both hear each other
//!   with the priorities they still have (no split brain with the same view of the world);
//! * once calm has lasted longer than `preempt_delay` + 2 × `Master_Down_Interval` (+ delays),
//!   exactly one router is Master (none if every live one is in FAULT), no preempting Backup has
//!   a higher priority than it (RFC 5798 §6.4.2: equal priorities do not preempt), and nothing
//!   changes any more.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ballast::vrrp::machine::{Action, Input, Machine, Params, State};
use ballast::vrrp::packet::{self, Advert, Auth, Expect, Version};

/// Adds a line to the trace, formatting it only when a trace is kept.
macro_rules! log {
    ($w:expr, $what:expr) => {
        if $w.trace.is_some() {
            let what = $what;
            $w.log(what.into());
        }
    };
}

const GROUP: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));
const VRID: u8 = 51;

/// One simulated router: the machine plus what the simulation knows about it.
struct Router {
    params: Params,
    machine: Machine,
    /// The process runs (not crashed, not shut down).
    alive: bool,
    /// Tracking: priority delta and weight-0 failure.
    delta: i32,
    fault: bool,
    /// The virtual address is on its interface.
    vips: bool,
    /// When it became Master (current stint).
    master_since: Option<Duration>,
    /// When its effective priority last changed.
    priority_changed: Duration,
    /// When it comes back after a crash or shutdown.
    restart_at: Option<Duration>,
    /// Per peer: the last advert heard from it while both were Master (sent at, received at,
    /// priority); cleared when this router becomes Master.
    heard: Vec<Option<(Duration, Duration, u8)>>,
}

/// A packet on the wire.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Packet {
    at: Duration,
    seq: u64,
    from: usize,
    to: usize,
    sent: Duration,
    bytes: Vec<u8>,
}

struct World {
    rng: fastrand::Rng,
    base: Instant,
    now: Duration,
    routers: Vec<Router>,
    wire: BinaryHeap<Reverse<Packet>>,
    seq: u64,
    /// Partition group per router; packets cross only within a group.
    group: Vec<u8>,
    /// Per-packet loss, percent.
    loss: u32,
    max_delay: Duration,
    version: Version,
    advert_int_cs: u32,
    trace: Option<String>,
}

fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + u8::try_from(i).unwrap_or(0)))
}

impl World {
    fn log(&mut self, what: String) {
        if let Some(t) = &mut self.trace {
            let _ = writeln!(t, "{:>10.3?} {what}", self.now);
        }
    }

    fn wire_interval(&self) -> u16 {
        let v = match self.version {
            Version::V2 => self.advert_int_cs / 100,
            Version::V3 => self.advert_int_cs,
        };
        u16::try_from(v).unwrap_or(u16::MAX)
    }

    fn expect(&self) -> Expect {
        Expect {
            version: self.version,
            vrid: VRID,
            auth: Auth::None,
            addrs: vec![VIP],
            interval_v2: self.wire_interval(),
        }
    }

    /// Feeds one input to router `i` and checks what comes out.
    fn feed(&mut self, i: usize, input: Input) -> Result<(), String> {
        let t = self.base + self.now;
        let before = self.routers[i].machine.state();
        let prio_before = self.routers[i].machine.effective_priority();
        let acts = self.routers[i].machine.handle(t, input);
        let after = self.routers[i].machine.state();
        log!(self, format!("r{i} {input:?} → {acts:?}"));
        if self.routers[i].machine.effective_priority() != prio_before {
            self.routers[i].priority_changed = self.now;
        }
        // The edge taken must be one of the RFC's, caused by the right input.
        if before != after {
            edge_allowed(before, after, &input, &self.routers[i], prio_before)
                .map_err(|e| format!("r{i}: {before:?} → {after:?} on {input:?}: {e}"))?;
        }
        let became: Vec<State> = acts
            .iter()
            .filter_map(|a| match a {
                Action::Became(s) => Some(*s),
                _ => None,
            })
            .collect();
        let expected: Vec<State> = if before == after { vec![] } else { vec![after] };
        if became != expected {
            return Err(format!(
                "r{i}: state {before:?} → {after:?} but actions say {acts:?}"
            ));
        }
        for a in acts {
            match a {
                // Only a Master advertises; priority 0 only as it stops being one.
                Action::Send(0) if before != State::Master || after == State::Master => {
                    return Err(format!(
                        "r{i}: priority 0 sent going {before:?} → {after:?}"
                    ));
                }
                Action::Send(p) if p != 0 && after != State::Master => {
                    return Err(format!("r{i}: advert sent as {after:?}"));
                }
                Action::Send(p) => self.send(i, p),
                Action::AddVips => {
                    if self.routers[i].vips {
                        return Err(format!("r{i}: adds the addresses it already holds"));
                    }
                    self.routers[i].vips = true;
                }
                Action::RemoveVips => {
                    if !self.routers[i].vips {
                        return Err(format!("r{i}: removes addresses it does not hold"));
                    }
                    self.routers[i].vips = false;
                }
                Action::Announce => {
                    if !self.routers[i].vips {
                        return Err(format!("r{i}: announces addresses it does not hold"));
                    }
                }
                Action::Became(State::Master) => {
                    self.routers[i].master_since = Some(self.now);
                    self.routers[i].heard.iter_mut().for_each(|h| *h = None);
                }
                Action::Became(_) => self.routers[i].master_since = None,
            }
        }
        Ok(())
    }

    /// Puts an advert from `from` on the wire to every router in its partition.
    fn send(&mut self, from: usize, priority: u8) {
        let advert = Advert {
            version: self.version,
            vrid: VRID,
            priority,
            interval: self.wire_interval(),
            addrs: vec![VIP],
            auth: Auth::None,
        };
        let bytes = packet::encode(&advert, ip(from), GROUP);
        for to in 0..self.routers.len() {
            if to == from || self.group[to] != self.group[from] {
                continue;
            }
            if self.rng.u32(0..100) < self.loss {
                log!(self, format!("r{from} → r{to}: lost"));
                continue;
            }
            let delay = self.rng.u64(0..=self.max_delay.as_micros() as u64);
            self.seq += 1;
            self.wire.push(Reverse(Packet {
                at: self.now + Duration::from_micros(delay),
                seq: self.seq,
                from,
                to,
                sent: self.now,
                bytes: bytes.clone(),
            }));
        }
    }

    fn deliver(&mut self, p: Packet) -> Result<(), String> {
        if !self.routers[p.to].alive {
            return Ok(());
        }
        let adv = packet::decode(&p.bytes, ip(p.from), GROUP)
            .map_err(|r| format!("own encoding does not decode: {r:?}"))?;
        packet::check(&adv, &self.expect())
            .map_err(|r| format!("own advert fails the receiver's checks: {r:?}"))?;
        let to = p.to;
        let receiver_master_since = self.routers[to].master_since;
        let sender_master = self.routers[p.from]
            .master_since
            .is_some_and(|s| s <= p.sent);
        if receiver_master_since.is_some() && sender_master && adv.priority != 0 {
            self.routers[to].heard[p.from] = Some((p.sent, self.now, adv.priority));
        }
        self.feed(
            to,
            Input::Advert {
                priority: adv.priority,
                interval_cs: adv.interval_cs(),
                src: ip(p.from),
            },
        )
    }

    fn track(&mut self, i: usize) -> Result<(), String> {
        if !self.routers[i].alive {
            return Ok(());
        }
        let (delta, fault) = (self.routers[i].delta, self.routers[i].fault);
        self.feed(i, Input::Track { delta, fault })
    }

    fn start(&mut self, i: usize) -> Result<(), String> {
        self.routers[i].alive = true;
        self.routers[i].restart_at = None;
        self.track(i)?;
        self.feed(i, Input::Startup)
    }

    /// One random disturbance.
    fn chaos(&mut self) -> Result<(), String> {
        let n = self.routers.len();
        let i = self.rng.usize(0..n);
        match self.rng.u32(0..100) {
            0..=14 => {
                for g in &mut self.group {
                    *g = self.rng.u8(0..2);
                }
                let g = self.group.clone();
                log!(self, format!("partition {g:?}"));
            }
            15..=29 => {
                self.group.iter_mut().for_each(|g| *g = 0);
                log!(self, "heal");
            }
            30..=39 => {
                self.loss = [0, 0, 10, 30, 60][self.rng.usize(0..5)];
                let l = self.loss;
                log!(self, format!("loss {l}%"));
            }
            40..=54 => {
                if self.routers[i].alive {
                    // A crash: the process is gone, no priority-0 advert, its addresses gone.
                    log!(self, format!("r{i} crashes"));
                    let r = &mut self.routers[i];
                    r.machine = Machine::new(r.params.clone());
                    r.alive = false;
                    r.vips = false;
                    r.master_since = None;
                    r.restart_at = Some(self.now + Duration::from_millis(self.rng.u64(0..8000)));
                }
            }
            55..=64 => {
                if self.routers[i].alive {
                    log!(self, format!("r{i} shuts down"));
                    self.feed(i, Input::Shutdown)?;
                    self.routers[i].alive = false;
                    self.routers[i].restart_at =
                        Some(self.now + Duration::from_millis(self.rng.u64(0..8000)));
                }
            }
            65..=84 => {
                self.routers[i].delta = self.rng.i32(-80..=80);
                log!(
                    self,
                    format!("r{i} tracking delta {}", self.routers[i].delta)
                );
                self.track(i)?;
            }
            _ => {
                self.routers[i].fault = !self.routers[i].fault;
                log!(self, format!("r{i} fault {}", self.routers[i].fault));
                self.track(i)?;
            }
        }
        Ok(())
    }

    /// The start of a calm phase: one network, no loss; dead routers restarted or left dead.
    fn calm(&mut self) -> Result<(), String> {
        self.group.iter_mut().for_each(|g| *g = 0);
        self.loss = 0;
        log!(self, "calm: healed, no loss");
        for i in 0..self.routers.len() {
            if self.rng.u32(0..4) == 0 {
                self.routers[i].fault = false;
                self.track(i)?;
            }
            if !self.routers[i].alive {
                if self.rng.u32(0..4) == 0 {
                    self.routers[i].restart_at = None;
                    log!(self, format!("r{i} stays down"));
                } else {
                    self.start(i)?;
                }
            }
        }
        Ok(())
    }

    /// Invariants that hold at every instant.
    fn check_always(&self) -> Result<(), String> {
        for (i, r) in self.routers.iter().enumerate() {
            let state = r.machine.state();
            if r.vips != (state == State::Master) {
                return Err(format!("r{i} is {state:?} but holds addresses: {}", r.vips));
            }
            if state == State::Master && (!r.alive || r.fault) {
                return Err(format!(
                    "r{i} is Master while alive={} fault={}",
                    r.alive, r.fault
                ));
            }
            if !r.alive && state != State::Init {
                return Err(format!("r{i} is down but {state:?}"));
            }
            if r.fault && r.alive && !matches!(state, State::Fault) {
                return Err(format!("r{i} has a fault but is {state:?}"));
            }
        }
        // Two Masters never both heard the other, as Master of its current stint, with the
        // priorities both still have.
        for i in 0..self.routers.len() {
            for j in i + 1..self.routers.len() {
                let (a, b) = (&self.routers[i], &self.routers[j]);
                if heard_now(a, j, b) && heard_now(b, i, a) {
                    return Err(format!(
                        "split brain: r{i} (priority {}) and r{j} (priority {}) are both Master and heard each other",
                        a.machine.effective_priority(),
                        b.machine.effective_priority()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Invariants of a settled calm network.
    fn check_settled(&self) -> Result<(), String> {
        let candidates: Vec<usize> = (0..self.routers.len())
            .filter(|&i| self.routers[i].alive && !self.routers[i].fault)
            .collect();
        let masters: Vec<usize> = (0..self.routers.len())
            .filter(|&i| self.routers[i].machine.state() == State::Master)
            .collect();
        let states: Vec<String> = self
            .routers
            .iter()
            .map(|r| {
                format!(
                    "{}/{}{}",
                    r.machine.state().as_str(),
                    r.machine.effective_priority(),
                    if r.params.preempt { "" } else { "/nopreempt" }
                )
            })
            .collect();
        if candidates.is_empty() {
            if !masters.is_empty() {
                return Err(format!("settled with no candidate but Masters {masters:?}"));
            }
            return Ok(());
        }
        let [m] = masters[..] else {
            return Err(format!(
                "settled with Masters {masters:?}, want exactly one; routers {states:?}"
            ));
        };
        let pm = self.routers[m].machine.effective_priority();
        for &b in &candidates {
            let r = &self.routers[b];
            if b != m && r.params.preempt && r.machine.effective_priority() > pm {
                return Err(format!(
                    "settled with r{m} (priority {pm}) Master though preempting r{b} has {}; routers {states:?}",
                    r.machine.effective_priority()
                ));
            }
            if b != m && r.machine.state() != State::Backup {
                return Err(format!("settled but r{b} is {:?}", r.machine.state()));
            }
        }
        Ok(())
    }

    /// The next thing to happen: a packet, a router's timer, or a restart; `None` past `until`.
    fn step(&mut self, until: Duration) -> Result<bool, String> {
        let packet_at = self.wire.peek().map(|p| p.0.at);
        let mut next: Option<(Duration, u8, usize)> = packet_at.map(|t| (t, 0, 0));
        for (i, r) in self.routers.iter().enumerate() {
            if let Some(d) = r.machine.deadline() {
                let t = d.saturating_duration_since(self.base);
                if next.is_none_or(|n| (t, 1, i) < n) {
                    next = Some((t, 1, i));
                }
            }
            if let Some(t) = r.restart_at {
                if next.is_none_or(|n| (t, 2, i) < n) {
                    next = Some((t, 2, i));
                }
            }
        }
        let Some((t, kind, i)) = next else {
            return Ok(false);
        };
        if t > until {
            return Ok(false);
        }
        self.now = self.now.max(t);
        match kind {
            0 => {
                if let Some(Reverse(p)) = self.wire.pop() {
                    self.deliver(p)?;
                }
            }
            1 => self.feed(i, Input::Timer)?,
            _ => {
                log!(self, format!("r{i} restarts"));
                self.start(i)?;
            }
        }
        Ok(true)
    }
}

/// Whether Master `r` heard Master `peer` (index `from`) in both their current stints, with the
/// priorities both still have: then `r` compared like with like and one of them must have stepped
/// down.
fn heard_now(r: &Router, from: usize, peer: &Router) -> bool {
    let (Some(mine), Some(theirs)) = (r.master_since, peer.master_since) else {
        return false;
    };
    r.heard[from].is_some_and(|(sent, received, p)| {
        sent >= theirs
            && sent >= peer.priority_changed
            && received >= mine
            && received >= r.priority_changed
            && p == peer.machine.effective_priority()
    })
}

/// Which edges the state machine may take, and on what.
fn edge_allowed(
    from: State,
    to: State,
    input: &Input,
    r: &Router,
    prio_before: u8,
) -> Result<(), &'static str> {
    let owner = r.params.priority == 255;
    match (from, to, input) {
        (State::Init, State::Backup, Input::Startup) if !owner => Ok(()),
        (State::Init, State::Master, Input::Startup) if owner => Ok(()),
        (State::Init, State::Fault, Input::Startup) => Ok(()),
        (State::Backup, State::Master, Input::Timer) => Ok(()),
        (State::Master, State::Backup, Input::Advert { priority, src, .. }) => {
            let better = *priority > prio_before
                || (*priority == prio_before && ip_octets(*src) > ip_octets(r.params.local_addr));
            if better {
                Ok(())
            } else {
                Err("stepped down for an advert that does not beat it")
            }
        }
        (State::Master | State::Backup, State::Fault, Input::Track { fault: true, .. }) => Ok(()),
        (State::Fault, State::Backup, Input::Track { fault: false, .. }) if !owner => Ok(()),
        (State::Fault, State::Master, Input::Track { fault: false, .. }) if owner => Ok(()),
        (_, State::Init, Input::Shutdown) => Ok(()),
        _ => Err("not an edge of RFC 5798 §6.4"),
    }
}

fn ip_octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One seeded run.
pub(crate) fn simulate(seed: u64, trace: bool) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let n = rng.usize(2..=4);
    let version = if rng.u32(0..4) == 0 {
        Version::V2
    } else {
        Version::V3
    };
    let advert_int_cs = match version {
        Version::V2 => 100,
        Version::V3 => [20, 50, 100][rng.usize(0..3)],
    };
    let advert_int = Duration::from_millis(u64::from(advert_int_cs) * 10);
    // Below a quarter of the interval: adverts of one sender arrive in order.
    let max_delay = advert_int / 4;
    let owner = (rng.u32(0..4) == 0).then(|| rng.usize(0..n));
    let mut routers = Vec::new();
    let mut max_preempt_delay = Duration::ZERO;
    for i in 0..n {
        // Few distinct priorities, so ties (broken by address) are common.
        let priority = if owner == Some(i) {
            255
        } else {
            [50, 100, 100, 150, 200, 254][rng.usize(0..6)]
        };
        let preempt = priority == 255 || rng.u32(0..4) != 0;
        let preempt_delay = if rng.bool() {
            Duration::ZERO
        } else {
            Duration::from_millis(rng.u64(0..5000))
        };
        max_preempt_delay = max_preempt_delay.max(preempt_delay);
        let params = Params {
            version,
            priority,
            advert_int_cs,
            preempt,
            preempt_delay,
            local_addr: ip(i),
        };
        routers.push(Router {
            machine: Machine::new(params.clone()),
            params,
            alive: false,
            delta: 0,
            fault: false,
            vips: false,
            master_since: None,
            priority_changed: Duration::ZERO,
            restart_at: None,
            heard: vec![None; n],
        });
    }
    let mut w = World {
        rng,
        base: Instant::now(),
        now: Duration::ZERO,
        routers,
        wire: BinaryHeap::new(),
        seq: 0,
        group: vec![0; n],
        loss: 0,
        max_delay,
        version,
        advert_int_cs,
        trace: trace.then(String::new),
    };
    for i in 0..n {
        let p = &w.routers[i].params;
        let (prio, pre, pd) = (p.priority, p.preempt, p.preempt_delay);
        log!(
            w,
            format!("r{i}: priority {prio} preempt {pre} preempt_delay {pd:?}")
        );
    }
    let result = run(&mut w, advert_int, max_preempt_delay);
    if let Some(t) = &w.trace {
        eprintln!("{t}");
    }
    result
}

fn run(w: &mut World, advert_int: Duration, max_preempt_delay: Duration) -> Result<(), String> {
    // Start-up, staggered.
    for i in 0..w.routers.len() {
        w.routers[i].restart_at = Some(Duration::from_millis(w.rng.u64(0..2000)));
    }
    // The longest Master_Down_Interval: 3 intervals plus a skew of at most one interval (v3) or
    // one second (v2).
    let mdi = advert_int * 3 + advert_int.max(Duration::from_secs(1));
    let settle = max_preempt_delay + mdi * 2 + w.max_delay * 4 + advert_int;
    for _round in 0..3 {
        // Chaos.
        let chaos_end = w.now + Duration::from_millis(w.rng.u64(2000..30_000));
        loop {
            let next_chaos = w.now + Duration::from_millis(w.rng.u64(0..3000));
            let until = next_chaos.min(chaos_end);
            while w.step(until)? {
                w.check_always()?;
            }
            w.now = until;
            if until == chaos_end {
                break;
            }
            w.chaos()?;
            w.check_always()?;
        }
        // Calm.
        w.calm()?;
        w.check_always()?;
        let settled_at = w.now + settle;
        while w.step(settled_at)? {
            w.check_always()?;
        }
        w.now = settled_at;
        w.check_settled()?;
        let states: Vec<State> = w.routers.iter().map(|r| r.machine.state()).collect();
        let calm_end = w.now + Duration::from_millis(w.rng.u64(1000..10_000));
        while w.step(calm_end)? {
            w.check_always()?;
            w.check_settled()?;
            let now: Vec<State> = w.routers.iter().map(|r| r.machine.state()).collect();
            if now != states {
                return Err(format!("settled network changed: {states:?} → {now:?}"));
            }
        }
        w.now = calm_end;
    }
    Ok(())
}
