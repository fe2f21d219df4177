//! The VRRP state machine of RFC 5798 §6.4 (and RFC 3768 §6.4 for v2), as a pure value: inputs
//! and the current time in, [`Action`]s out. No sockets, no clock of its own, so every timer
//! path is tested by handing it instants.
//!
//! ```text
//!            Startup (priority 255)                 Master_Down_Timer
//!   Init ───────────────────────────► Master ◄──────────────────────── Backup
//!    │  Startup (otherwise)             │  higher-priority advert          ▲
//!    └──────────────────────────────────┼─────────────────────────────────►┘
//!                                       │  Shutdown: send priority 0, remove VIPs
//!   any ── tracked failure (weight 0) ─► Fault ── cleared ─► Backup
//! ```
//!
//! Timers (exact formulas, RFC 5798 §6.1 and Keepalived's `VRRP_TIMER_SKEW`):
//! * v3: `Skew_Time = (256 − Priority) × Master_Adver_Interval / 256`;
//!   v2: `Skew_Time = (256 − Priority) / 256` seconds.
//! * `Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time`.
//! * A v3 Backup takes `Master_Adver_Interval` from each accepted advert; v2 uses its own.
//!
//! Beyond the RFC, as Keepalived does: `preempt_delay` (a higher-priority Backup waits this long
//! after start-up or after first seeing a lower-priority Master), a Master answering a
//! lower-priority advert at once with its own advert and gratuitous ARPs (forcing the election to
//! settle), and the FAULT state entered while a tracked object with weight 0 is down.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::packet::Version;

/// The protocol state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started, or shut down.
    Init,
    /// Watching the Master; takes over when it goes quiet.
    Backup,
    /// Owns the virtual addresses and advertises.
    Master,
    /// A tracked interface, script or upstream with weight 0 is down: no VIPs, no adverts.
    Fault,
}

impl State {
    /// Keepalived's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// What the instance is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Protocol version.
    pub version: Version,
    /// Base priority, 1..=255; 255 = address owner (never changed by tracking).
    pub priority: u8,
    /// Own `Advertisement_Interval`, in centiseconds (v2: a multiple of 100).
    pub advert_int_cs: u32,
    /// Preempt a lower-priority Master (default on; Keepalived `nopreempt` turns it off).
    pub preempt: bool,
    /// Keepalived `preempt_delay`.
    pub preempt_delay: Duration,
    /// This node's own address on the interface, for the equal-priority tie-break (RFC 5798
    /// §6.4.3: the higher primary address wins).
    pub local_addr: IpAddr,
}

/// An event the machine reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The instance starts.
    Startup,
    /// A valid advert for this VRID (already checked by the codec) from `src`.
    Advert {
        /// Sender's priority.
        priority: u8,
        /// Sender's advertisement interval in centiseconds.
        interval_cs: u32,
        /// Sender's address.
        src: IpAddr,
    },
    /// The deadline returned by [`Machine::deadline`] has passed.
    Timer,
    /// Clean shutdown (SIGTERM).
    Shutdown,
    /// Tracking changed: the sum of the weights that apply now, and whether a weight-0 object is
    /// down (FAULT).
    Track {
        /// Added to the base priority (clamped to 1..=254; ignored for an owner).
        delta: i32,
        /// A weight-0 tracked object is down.
        fault: bool,
    },
}

/// What the caller must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority.
    Send(u8),
    /// Add the virtual addresses to the interface.
    AddVips,
    /// Remove them.
    RemoveVips,
    /// Announce the addresses: gratuitous ARP (IPv4), unsolicited neighbour advertisement (IPv6).
    Announce,
    /// The state changed to this one (run notify scripts, log).
    Became(State),
}

/// One VRRP instance's protocol state.
#[derive(Debug, Clone)]
pub struct Machine {
    params: Params,
    state: State,
    /// `Master_Adver_Interval` in centiseconds.
    master_adver_int_cs: u32,
    /// Master: when to send the next advert. Backup: when the Master is declared down.
    deadline: Option<Instant>,
    delta: i32,
    fault: bool,
    /// Until when a higher-priority Backup holds back (`preempt_delay`).
    preempt_until: Option<Instant>,
}

impl Machine {
    /// A machine in Init.
    pub fn new(params: Params) -> Machine {
        let master_adver_int_cs = params.advert_int_cs;
        Machine {
            params,
            state: State::Init,
            master_adver_int_cs,
            deadline: None,
            delta: 0,
            fault: false,
            preempt_until: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// When [`Input::Timer`] is due, if a timer runs.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The priority adverts carry now: the base priority plus tracking weights, within 1..=254;
    /// an owner (255) stays 255.
    pub fn effective_priority(&self) -> u8 {
        if self.params.priority == 255 {
            return 255;
        }
        let p = i32::from(self.params.priority) + self.delta;
        u8::try_from(p.clamp(1, 254)).unwrap_or(1)
    }

    /// `Master_Adver_Interval`.
    pub fn master_adver_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.master_adver_int_cs) * 10)
    }

    /// `Skew_Time` for the effective priority.
    pub fn skew(&self) -> Duration {
        skew(
            self.params.version,
            self.effective_priority(),
            self.master_adver_int_cs,
        )
    }

    /// `Master_Down_Interval`.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval() * 3 + self.skew()
    }

    fn advert_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.params.advert_int_cs) * 10)
    }

    /// Feeds one input at time `now`.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Startup => self.startup(now, &mut out),
            Input::Advert {
                priority,
                interval_cs,
                src,
            } => self.advert(now, priority, interval_cs, src, &mut out),
            Input::Timer => self.timer(now, &mut out),
            Input::Shutdown => {
                if self.state == State::Master {
                    out.push(Action::Send(0));
                    out.push(Action::RemoveVips);
                }
                self.enter(State::Init, None, &mut out);
            }
            Input::Track { delta, fault } => self.track(now, delta, fault, &mut out),
        }
        out
    }

    fn enter(&mut self, state: State, deadline: Option<Instant>, out: &mut Vec<Action>) {
        self.deadline = deadline;
        if self.state != state {
            self.state = state;
            out.push(Action::Became(state));
        }
    }

    fn become_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        // The advert first (RFC 5798 §6.4.2 order), so the other routers hear of the new Master
        // before the address work; then the addresses, then their announcement.
        out.push(Action::Send(self.effective_priority()));
        out.push(Action::AddVips);
        out.push(Action::Announce);
        self.enter(State::Master, Some(now + self.advert_interval()), out);
    }

    fn become_backup(&mut self, now: Instant, out: &mut Vec<Action>) {
        let down = now + self.master_down_interval();
        self.enter(State::Backup, Some(down), out);
    }

    fn startup(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state != State::Init {
            return;
        }
        self.master_adver_int_cs = self.params.advert_int_cs;
        if !self.params.preempt_delay.is_zero() {
            self.preempt_until = Some(now + self.params.preempt_delay);
        }
        if self.fault {
            self.enter(State::Fault, None, out);
        } else if self.params.priority == 255 {
            self.become_master(now, out);
        } else {
            self.become_backup(now, out);
        }
    }

    fn advert(
        &mut self,
        now: Instant,
        priority: u8,
        interval_cs: u32,
        src: IpAddr,
        out: &mut Vec<Action>,
    ) {
        let ours = self.effective_priority();
        match self.state {
            State::Init | State::Fault => {}
            State::Backup => {
                if priority == 0 {
                    // The Master resigned: take over after Skew_Time only.
                    self.deadline = Some(now + self.skew());
                    return;
                }
                let accept = if !self.params.preempt || priority >= ours {
                    self.preempt_until = None;
                    true
                } else {
                    // A lower-priority Master: preempt, unless preempt_delay holds us back.
                    if self.params.preempt_delay.is_zero() {
                        false
                    } else {
                        let until = *self
                            .preempt_until
                            .get_or_insert(now + self.params.preempt_delay);
                        now < until
                    }
                };
                if accept {
                    if self.params.version == Version::V3 {
                        self.master_adver_int_cs = interval_cs;
                    }
                    self.deadline = Some(now + self.master_down_interval());
                }
            }
            State::Master => {
                if priority == 0 {
                    // Another Master resigned; make sure the Backups hear from us at once.
                    out.push(Action::Send(ours));
                    self.deadline = Some(now + self.advert_interval());
                    return;
                }
                let wins =
                    priority > ours || (priority == ours && ip_gt(src, self.params.local_addr));
                if wins {
                    if self.params.version == Version::V3 {
                        self.master_adver_int_cs = interval_cs;
                    }
                    out.push(Action::RemoveVips);
                    self.become_backup(now, out);
                } else {
                    // A lower-priority Master (a split brain healing, or a node starting): answer
                    // at once so it steps down, and re-announce the addresses (Keepalived does
                    // the same, "forcing a new election").
                    out.push(Action::Send(ours));
                    out.push(Action::Announce);
                    self.deadline = Some(now + self.advert_interval());
                }
            }
        }
    }

    fn timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        match self.state {
            State::Backup => {
                self.master_adver_int_cs = self.params.advert_int_cs;
                self.become_master(now, out);
            }
            State::Master => {
                out.push(Action::Send(self.effective_priority()));
                // Keep the cadence: the next advert is due one interval after this one was,
                // unless the task fell far behind.
                let next = deadline + self.advert_interval();
                self.deadline = Some(if next > now {
                    next
                } else {
                    now + self.advert_interval()
                });
            }
            State::Init | State::Fault => self.deadline = None,
        }
    }

    fn track(&mut self, now: Instant, delta: i32, fault: bool, out: &mut Vec<Action>) {
        let before = self.effective_priority();
        self.delta = delta;
        let was_fault = self.fault;
        self.fault = fault;
        match self.state {
            State::Init => {}
            State::Fault if !fault => {
                if self.params.priority == 255 {
                    self.become_master(now, out);
                } else {
                    self.master_adver_int_cs = self.params.advert_int_cs;
                    self.become_backup(now, out);
                }
            }
            State::Fault => {}
            State::Master | State::Backup if fault && !was_fault => {
                if self.state == State::Master {
                    // Tell the Backups now (priority 0) rather than after Master_Down_Interval.
                    out.push(Action::Send(0));
                    out.push(Action::RemoveVips);
                }
                self.enter(State::Fault, None, out);
            }
            State::Master => {
                if self.effective_priority() != before {
                    // Advertise the new priority at once so a better Backup can preempt.
                    out.push(Action::Send(self.effective_priority()));
                    self.deadline = Some(now + self.advert_interval());
                }
            }
            State::Backup => {}
        }
    }
}

/// `Skew_Time` for `priority` (RFC 5798 §6.1; RFC 3768 §6.1 for v2, whose skew ignores the
/// interval).
pub fn skew(version: Version, priority: u8, master_adver_int_cs: u32) -> Duration {
    let weight = 256 - u64::from(priority);
    match version {
        Version::V2 => Duration::from_nanos(weight * 1_000_000_000 / 256),
        Version::V3 => {
            Duration::from_nanos(weight * u64::from(master_adver_int_cs) * 10_000_000 / 256)
        }
    }
}

/// `Master_Down_Interval` = 3 × interval + skew.
pub fn master_down_interval(version: Version, priority: u8, master_adver_int_cs: u32) -> Duration {
    Duration::from_millis(u64::from(master_adver_int_cs) * 30)
        + skew(version, priority, master_adver_int_cs)
}

/// `a > b` as RFC 5798 compares primary addresses: as unsigned integers in network byte order.
fn ip_gt(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets() > b.octets(),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets() > b.octets(),
        _ => false,
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
