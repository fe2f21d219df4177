//! Helpers shared by the scheduler unit tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{server_id, PickContext, SchedServer, Scheduler, SchedulerKind};

/// A `load` under which every server is eligible and idle.
pub(super) const ALWAYS: fn(usize) -> Option<u64> = |_| Some(0);

/// Servers `10.0.x.y:80` (x.y = index) with the given weights and their real [`server_id`].
pub(super) fn servers(weights: &[u32]) -> Vec<SchedServer> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| SchedServer {
            weight,
            id: server_id(&addr(i)),
        })
        .collect()
}

/// The address of test server `i`.
pub(super) fn addr(i: usize) -> SocketAddr {
    let i = u32::try_from(i).expect("test server index fits u32");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)), 80)
}

pub(super) fn sched(kind: SchedulerKind, weights: &[u32]) -> Scheduler {
    Scheduler::new(kind, &servers(weights))
}

/// Client number `n` (as the IPv4 address `n`, offset into 100.64.0.0/10) talking to 192.0.2.1.
pub(super) fn ctx(n: u32) -> PickContext {
    PickContext {
        client: IpAddr::V4(Ipv4Addr::from(0x6440_0000u32.wrapping_add(n))),
        local: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    }
}

/// How often each of `n` servers is picked over `picks` picks (client 1), with `load`.
pub(super) fn counts(
    s: &Scheduler,
    n: usize,
    picks: usize,
    load: impl Fn(usize) -> Option<u64>,
) -> Vec<u64> {
    let mut c = vec![0; n];
    for _ in 0..picks {
        c[s.pick(&ctx(1), &load).expect("a server is eligible")] += 1;
    }
    c
}

/// How many of `clients` distinct clients map to each of `n` servers, with `load`.
pub(super) fn client_counts(
    s: &Scheduler,
    n: usize,
    clients: u32,
    load: impl Fn(usize) -> Option<u64>,
) -> Vec<u64> {
    let mut c = vec![0; n];
    for k in 0..clients {
        c[s.pick(&ctx(k), &load).expect("a server is eligible")] += 1;
    }
    c
}

/// Asserts each server's share of `counts` is within `tolerance` (absolute, as a fraction of the
/// total) of its share of `weights`.
pub(super) fn assert_shares(counts: &[u64], weights: &[u32], tolerance: f64) {
    let total: u64 = counts.iter().sum();
    let wsum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    for (i, (&c, &w)) in counts.iter().zip(weights).enumerate() {
        let got = c as f64 / total as f64;
        let want = f64::from(w) / wsum as f64;
        assert!(
            (got - want).abs() <= tolerance,
            "server {i}: share {got:.4}, weight share {want:.4}, tolerance {tolerance} ({counts:?} for weights {weights:?})"
        );
    }
}
