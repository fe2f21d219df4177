//! State machine tests with an injected clock: every path of RFC 5798 §6.4 plus Keepalived's
//! additions, and the timer formulas against the worked examples.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11));
const PEER_LOW: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
const PEER_HIGH: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 20));

fn params(version: Version, priority: u8, advert_int_cs: u32) -> Params {
    Params {
        version,
        priority,
        advert_int_cs,
        preempt: true,
        preempt_delay: Duration::ZERO,
        local_addr: ME,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn advert(priority: u8, interval_cs: u32, src: IpAddr) -> Input {
    Input::Advert {
        priority,
        interval_cs,
        src,
    }
}

/// Runs timers up to `until`, collecting the actions.
fn run_until(m: &mut Machine, until: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    while let Some(d) = m.deadline() {
        if d > until {
            break;
        }
        out.extend(m.handle(d, Input::Timer));
    }
    out
}

#[test]
fn timer_formulas_match_the_rfc_worked_examples() {
    // priority 100 at 1 s: skew 156/256 s = 0.609375 s; MDI 3.609375 s (both versions).
    assert_eq!(skew(Version::V2, 100, 100), Duration::from_micros(609_375));
    assert_eq!(skew(Version::V3, 100, 100), Duration::from_micros(609_375));
    assert_eq!(
        master_down_interval(Version::V3, 100, 100),
        Duration::from_micros(3_609_375)
    );
    // Keepalived's example: priority 128 → 3.5 s.
    assert_eq!(
        master_down_interval(Version::V2, 128, 100),
        Duration::from_millis(3500)
    );
    // v3 at 10 cs, priority 100 → 0.3609375 s; priority 90 → 0.36484375 s.
    assert_eq!(
        master_down_interval(Version::V3, 100, 10),
        Duration::from_nanos(360_937_500)
    );
    assert_eq!(skew(Version::V3, 90, 10), Duration::from_nanos(64_843_750));
    // v2's skew ignores the interval.
    assert_eq!(
        skew(Version::V2, 90, 200),
        Duration::from_nanos(648_437_500)
    );
}

#[test]
fn a_backup_becomes_master_after_master_down_interval_of_silence() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V3, 90, 10));
    assert_eq!(
        m.handle(t0, Input::Startup),
        vec![Action::Became(State::Backup)]
    );
    let mdi = m.master_down_interval();
    assert_eq!(m.deadline(), Some(t0 + mdi));
    // Nothing happens a moment before.
    assert!(m.handle(t0 + mdi - ms(1), Input::Timer).is_empty());
    assert_eq!(
        m.handle(t0 + mdi, Input::Timer),
        vec![
            Action::Send(90),
            Action::AddVips,
            Action::Announce,
            Action::Became(State::Master)
        ]
    );
    assert_eq!(m.deadline(), Some(t0 + mdi + ms(100)));
}

#[test]
fn adverts_from_a_better_master_keep_a_backup_quiet() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V3, 90, 10));
    m.handle(t0, Input::Startup);
    for i in 1..50u64 {
        let t = t0 + ms(100 * i);
        assert!(m.handle(t, advert(100, 10, PEER_LOW)).is_empty());
        assert!(run_until(&mut m, t + ms(99)).is_empty());
    }
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn a_v3_backup_adopts_the_masters_interval() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V3, 90, 100));
    m.handle(t0, Input::Startup);
    m.handle(t0, advert(100, 10, PEER_LOW));
    assert_eq!(m.master_adver_interval(), ms(100));
    assert_eq!(m.deadline(), Some(t0 + m.master_down_interval()));
    assert!(m.master_down_interval() < ms(400));
    // v2 keeps its own.
    let mut v2 = Machine::new(params(Version::V2, 90, 100));
    v2.handle(t0, Input::Startup);
    v2.handle(t0, advert(100, 200, PEER_LOW));
    assert_eq!(v2.master_adver_interval(), ms(1000));
}

#[test]
fn priority_zero_makes_the_backup_take_over_after_skew_only() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V2, 90, 100));
    m.handle(t0, Input::Startup);
    m.handle(t0 + ms(500), advert(100, 100, PEER_LOW));
    m.handle(t0 + ms(1000), advert(0, 100, PEER_LOW));
    assert_eq!(
        m.deadline(),
        Some(t0 + ms(1000) + Duration::from_nanos(648_437_500))
    );
    let acts = run_until(&mut m, t0 + ms(1700));
    assert!(acts.contains(&Action::Became(State::Master)));
}

#[test]
fn preemption_a_higher_backup_ignores_a_lower_master_and_takes_over() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V3, 100, 10));
    m.handle(t0, Input::Startup);
    let mut became = None;
    for i in 1..20u64 {
        let t = t0 + ms(100 * i);
        m.handle(t, advert(90, 10, PEER_HIGH));
        if run_until(&mut m, t + ms(99)).contains(&Action::Became(State::Master)) {
            became = Some(t);
            break;
        }
    }
    // Lower adverts are ignored, so the first Master_Down_Interval after start-up decides.
    let became = became.expect("preempts");
    assert!(became - t0 <= m.master_down_interval() + ms(100));
}

#[test]
fn nopreempt_keeps_a_higher_backup_in_backup() {
    let t0 = Instant::now();
    let mut p = params(Version::V3, 200, 10);
    p.preempt = false;
    let mut m = Machine::new(p);
    m.handle(t0, Input::Startup);
    for i in 1..30u64 {
        let t = t0 + ms(100 * i);
        m.handle(t, advert(90, 10, PEER_HIGH));
        assert!(run_until(&mut m, t + ms(99)).is_empty());
    }
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn preempt_delay_holds_a_higher_backup_back_that_long() {
    let t0 = Instant::now();
    let mut p = params(Version::V3, 200, 10);
    p.preempt_delay = Duration::from_secs(2);
    let mut m = Machine::new(p);
    m.handle(t0, Input::Startup);
    let mut became = None;
    for i in 1..60u64 {
        let t = t0 + ms(100 * i);
        m.handle(t, advert(90, 10, PEER_HIGH));
        if run_until(&mut m, t + ms(99)).contains(&Action::Became(State::Master)) {
            became = Some(t);
            break;
        }
    }
    let became = became.expect("preempts after the delay");
    assert!(became - t0 >= Duration::from_secs(2), "{:?}", became - t0);
    assert!(became - t0 <= Duration::from_secs(2) + ms(500));
}

#[test]
fn an_owner_starts_as_master_at_once() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V3, 255, 100));
    let acts = m.handle(t0, Input::Startup);
    assert_eq!(acts.last(), Some(&Action::Became(State::Master)));
    assert!(acts.contains(&Action::Send(255)));
    // Tracking never lowers an owner.
    m.handle(
        t0,
        Input::Track {
            delta: -100,
            fault: false,
        },
    );
    assert_eq!(m.effective_priority(), 255);
}

#[test]
fn master_sends_adverts_every_interval_and_steps_down_for_a_better_one() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V3, 255, 10));
    m.handle(t0, Input::Startup);
    let acts = run_until(&mut m, t0 + ms(1000));
    let sends = acts
        .iter()
        .filter(|a| matches!(a, Action::Send(255)))
        .count();
    assert_eq!(sends, 10);

    let mut m = Machine::new(params(Version::V3, 100, 10));
    m.handle(t0, Input::Startup);
    run_until(&mut m, t0 + ms(500));
    assert_eq!(m.state(), State::Master);
    assert_eq!(
        m.handle(t0 + ms(510), advert(150, 10, PEER_LOW)),
        vec![Action::RemoveVips, Action::Became(State::Backup)]
    );
}

#[test]
fn equal_priority_is_decided_by_the_higher_address() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V3, 100, 10));
    m.handle(t0, Input::Startup);
    run_until(&mut m, t0 + ms(500));
    // From a lower address: we stay, and answer at once.
    assert_eq!(
        m.handle(t0 + ms(501), advert(100, 10, PEER_LOW)),
        vec![Action::Send(100), Action::Announce]
    );
    assert_eq!(m.state(), State::Master);
    // From a higher address: we step down.
    let acts = m.handle(t0 + ms(502), advert(100, 10, PEER_HIGH));
    assert!(acts.contains(&Action::Became(State::Backup)));
}

#[test]
fn a_master_answers_a_lower_priority_advert_at_once() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V2, 150, 100));
    m.handle(t0, Input::Startup);
    run_until(&mut m, t0 + ms(4000));
    assert_eq!(m.state(), State::Master);
    let t = t0 + ms(4100);
    assert_eq!(
        m.handle(t, advert(100, 100, PEER_HIGH)),
        vec![Action::Send(150), Action::Announce]
    );
    assert_eq!(m.deadline(), Some(t + ms(1000)));
}

#[test]
fn shutdown_of_a_master_sends_priority_zero_then_removes_the_addresses() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V3, 255, 100));
    m.handle(t0, Input::Startup);
    assert_eq!(
        m.handle(t0 + ms(10), Input::Shutdown),
        vec![
            Action::Send(0),
            Action::RemoveVips,
            Action::Became(State::Init)
        ]
    );
    assert_eq!(m.deadline(), None);
    // A Backup just stops.
    let mut b = Machine::new(params(Version::V3, 90, 100));
    b.handle(t0, Input::Startup);
    assert_eq!(
        b.handle(t0, Input::Shutdown),
        vec![Action::Became(State::Init)]
    );
}

#[test]
fn tracking_lowers_the_priority_and_a_weight_zero_failure_means_fault() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V3, 100, 10));
    m.handle(t0, Input::Startup);
    run_until(&mut m, t0 + ms(500));
    assert_eq!(m.state(), State::Master);
    // A weighted failure: the new priority is advertised at once.
    assert_eq!(
        m.handle(
            t0 + ms(501),
            Input::Track {
                delta: -30,
                fault: false
            }
        ),
        vec![Action::Send(70)]
    );
    assert_eq!(m.effective_priority(), 70);
    // The skew follows the effective priority.
    assert_eq!(m.skew(), skew(Version::V3, 70, 10));
    // A weight-0 failure: priority 0 so the Backup takes over now, then FAULT.
    assert_eq!(
        m.handle(
            t0 + ms(502),
            Input::Track {
                delta: -30,
                fault: true
            }
        ),
        vec![
            Action::Send(0),
            Action::RemoveVips,
            Action::Became(State::Fault)
        ]
    );
    assert_eq!(m.deadline(), None);
    // Adverts are ignored in FAULT.
    assert!(m.handle(t0 + ms(600), advert(50, 10, PEER_LOW)).is_empty());
    // Cleared: back to Backup with a fresh Master_Down_Timer.
    let t = t0 + ms(700);
    assert_eq!(
        m.handle(
            t,
            Input::Track {
                delta: 0,
                fault: false
            }
        ),
        vec![Action::Became(State::Backup)]
    );
    assert_eq!(m.deadline(), Some(t + m.master_down_interval()));
    // Clamped to 1..=254.
    m.handle(
        t,
        Input::Track {
            delta: -1000,
            fault: false,
        },
    );
    assert_eq!(m.effective_priority(), 1);
    m.handle(
        t,
        Input::Track {
            delta: 1000,
            fault: false,
        },
    );
    assert_eq!(m.effective_priority(), 254);
}

#[test]
fn a_fault_before_startup_starts_in_fault() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(Version::V3, 100, 10));
    m.handle(
        t0,
        Input::Track {
            delta: 0,
            fault: true,
        },
    );
    assert_eq!(
        m.handle(t0, Input::Startup),
        vec![Action::Became(State::Fault)]
    );
}

/// Two machines wired to each other through a lossless, instant "network": exactly one Master in
/// steady state whatever the priorities, and the better one wins.
#[test]
fn two_machines_elect_exactly_one_master() {
    for (pa, pb) in [(100, 90), (90, 100), (100, 100), (255, 200), (1, 254)] {
        let t0 = Instant::now();
        let addr_a = PEER_LOW;
        let addr_b = PEER_HIGH;
        let mut a = Machine::new(Params {
            local_addr: addr_a,
            ..params(Version::V3, pa, 10)
        });
        let mut b = Machine::new(Params {
            local_addr: addr_b,
            ..params(Version::V3, pb, 10)
        });
        let mut inbox: Vec<(Instant, bool, Input)> = Vec::new();
        let deliver = |acts: Vec<Action>, t: Instant, to_b: bool, src, inbox: &mut Vec<_>| {
            for act in acts {
                if let Action::Send(p) = act {
                    inbox.push((
                        t,
                        to_b,
                        Input::Advert {
                            priority: p,
                            interval_cs: 10,
                            src,
                        },
                    ));
                }
            }
        };
        let acts = a.handle(t0, Input::Startup);
        deliver(acts, t0, true, addr_a, &mut inbox);
        let acts = b.handle(t0 + ms(3), Input::Startup);
        deliver(acts, t0 + ms(3), false, addr_b, &mut inbox);
        let end = t0 + Duration::from_secs(5);
        let mut now = t0;
        while now < end {
            now += ms(1);
            for (t, to_b, input) in std::mem::take(&mut inbox) {
                let acts = if to_b {
                    b.handle(t, input)
                } else {
                    a.handle(t, input)
                };
                deliver(
                    acts,
                    t,
                    !to_b,
                    if to_b { addr_b } else { addr_a },
                    &mut inbox,
                );
            }
            if a.deadline().is_some_and(|d| d <= now) {
                let acts = a.handle(now, Input::Timer);
                deliver(acts, now, true, addr_a, &mut inbox);
            }
            if b.deadline().is_some_and(|d| d <= now) {
                let acts = b.handle(now, Input::Timer);
                deliver(acts, now, false, addr_b, &mut inbox);
            }
        }
        let masters = [a.state(), b.state()]
            .iter()
            .filter(|s| **s == State::Master)
            .count();
        assert_eq!(masters, 1, "priorities {pa}/{pb}");
        // With equal priorities the first to time out wins: a Backup accepts an equal-priority
        // Master whatever its address (RFC 5798 §6.4.2); the address only breaks a tie between
        // two Masters (tested in equal_priority_is_decided_by_the_higher_address).
        if pa != pb {
            assert_eq!(a.state() == State::Master, pa > pb, "priorities {pa}/{pb}");
        }
    }
}
