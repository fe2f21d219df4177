//! Properties every scheduler shares: the kind names, the empty and all-ineligible cases,
//! never returning an ineligible index, retries that visit each server once, `Send + Sync`.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::testutil::{counts, ctx, sched, servers, ALWAYS};
use super::{server_id, Scheduler, SchedulerKind};

#[test]
fn kind_names_are_the_lvs_short_names_and_parse_back() {
    let names: Vec<_> = SchedulerKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        ["rr", "wrr", "lc", "wlc", "sh", "dh", "mh", "random", "p2c"]
    );
    for k in SchedulerKind::ALL {
        assert_eq!(SchedulerKind::parse(k.as_str()), Some(k));
        assert_eq!(k.to_string(), k.as_str());
    }
    for bad in ["", "RR", "Wlc", " wlc", "wlc ", "maglev", "p2", "lblc"] {
        assert_eq!(SchedulerKind::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn server_id_is_pinned_so_hashed_clients_keep_their_servers_across_versions() {
    // If this value changes, every sh/dh/mh client moves after an upgrade: don't change the seed
    // or the encoding without meaning to.
    let a: SocketAddr = "10.0.0.1:80".parse().expect("valid");
    assert_eq!(server_id(&a), 0x3cf1_cc93_7d5d_9b1e);
    let other_port: SocketAddr = "10.0.0.1:81".parse().expect("valid");
    assert_ne!(server_id(&a), server_id(&other_port));
    let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()), 80);
    assert_eq!(server_id(&a), server_id(&mapped));
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 80);
    assert_ne!(server_id(&v6), server_id(&a));
}

#[test]
fn scheduler_reports_its_kind_and_size() {
    for kind in SchedulerKind::ALL {
        let s = sched(kind, &[1, 0, 3]);
        assert_eq!(s.kind(), kind);
        assert_eq!(s.len(), 3, "weight-0 servers keep their index");
        assert!(!s.is_empty());
        let empty = Scheduler::new(kind, &[]);
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
    }
}

#[test]
fn every_scheduler_returns_none_for_an_empty_list() {
    for kind in SchedulerKind::ALL {
        let s = Scheduler::new(kind, &[]);
        assert_eq!(s.pick(&ctx(1), ALWAYS), None, "{kind}");
    }
}

#[test]
fn every_scheduler_returns_none_when_all_weights_are_zero() {
    for kind in SchedulerKind::ALL {
        let s = sched(kind, &[0, 0, 0]);
        let asked = Cell::new(0);
        let load = |_| {
            asked.set(asked.get() + 1);
            Some(0)
        };
        assert_eq!(s.pick(&ctx(1), load), None, "{kind}");
        assert_eq!(
            asked.get(),
            0,
            "{kind}: load is never asked about weight-0 servers"
        );
    }
}

#[test]
fn every_scheduler_returns_none_when_all_servers_are_ineligible() {
    for kind in SchedulerKind::ALL {
        for weights in [&[1][..], &[1, 2, 3], &[5; 100]] {
            let s = sched(kind, weights);
            assert_eq!(s.pick(&ctx(1), |_| None), None, "{kind} {weights:?}");
        }
    }
}

#[test]
fn every_scheduler_only_returns_eligible_servers_of_positive_weight() {
    // Property-style: random weights (some 0) and random eligibility masks, bounded.
    fastrand::seed(0x5eed);
    for kind in SchedulerKind::ALL {
        for _ in 0..30 {
            let n = fastrand::usize(1..12);
            let weights: Vec<u32> = (0..n).map(|_| fastrand::u32(0..5)).collect();
            let s = sched(kind, &weights);
            for _ in 0..20 {
                let mask: Vec<bool> = (0..n).map(|_| fastrand::bool()).collect();
                let any = (0..n).any(|i| mask[i] && weights[i] > 0);
                for client in 0..5 {
                    let picked = s.pick(&ctx(client), |i| mask[i].then_some(fastrand::u64(..9)));
                    match picked {
                        Some(i) => assert!(
                            mask[i] && weights[i] > 0,
                            "{kind}: picked {i} of {weights:?} with mask {mask:?}"
                        ),
                        None => assert!(!any, "{kind}: None with {weights:?} and mask {mask:?}"),
                    }
                }
            }
        }
    }
}

#[test]
fn retrying_visits_every_pickable_server_exactly_once_then_gives_up() {
    // What the proxy does on connect failures: each tried server becomes ineligible.
    for kind in SchedulerKind::ALL {
        for weights in [&[1, 1, 1][..], &[5, 0, 1, 3], &[1; 70], &[1000, 1, 1]] {
            let s = sched(kind, weights);
            for client in 0..20 {
                let tried: Vec<Cell<bool>> = weights.iter().map(|_| Cell::new(false)).collect();
                let mut picks = 0;
                while let Some(i) = s.pick(&ctx(client), |i| (!tried[i].get()).then_some(i as u64))
                {
                    assert!(!tried[i].get(), "{kind}: {i} picked twice");
                    tried[i].set(true);
                    picks += 1;
                    assert!(picks <= weights.len(), "{kind}: does not terminate");
                }
                let pickable = weights.iter().filter(|&&w| w > 0).count();
                assert_eq!(picks, pickable, "{kind} {weights:?}");
            }
        }
    }
}

#[test]
fn every_scheduler_calls_load_a_bounded_number_of_times() {
    // The documented bound: 64 + 4n calls, n = servers of weight > 0. Worst cases: nothing
    // eligible, or one server eligible far from where the scheduler looks first.
    let n = 300;
    for kind in SchedulerKind::ALL {
        let s = sched(kind, &vec![1; n]);
        for eligible in [None, Some(0), Some(150), Some(n - 1)] {
            let calls = Cell::new(0usize);
            let res = s.pick(&ctx(3), |i| {
                calls.set(calls.get() + 1);
                (Some(i) == eligible).then_some(0)
            });
            assert_eq!(res, eligible, "{kind}");
            assert!(calls.get() <= 64 + 4 * n, "{kind}: {} calls", calls.get());
        }
    }
}

#[test]
fn rotating_schedulers_stay_exact_under_concurrent_picks() {
    // With no server skipped, every pick takes its own cursor slot: shares are exact even when
    // threads race.
    for (kind, weights) in [
        (SchedulerKind::RoundRobin, vec![1, 1, 1]),
        (SchedulerKind::WeightedRoundRobin, vec![5, 1, 1]),
    ] {
        let s = sched(kind, &weights);
        let total: u32 = weights.iter().sum();
        let per_thread = 700 * total as usize;
        let all: Vec<Vec<u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| counts(&s, weights.len(), per_thread, ALWAYS)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        for (i, &w) in weights.iter().enumerate() {
            let got: u64 = all.iter().map(|c| c[i]).sum();
            assert_eq!(got, 4 * 700 * u64::from(w), "{kind}: server {i}");
        }
    }
}

#[test]
fn scheduler_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Scheduler>();
}

#[test]
fn hashed_client_mappings_are_pinned() {
    // Client k → server for the first clients, ten equal servers 10.0.0.0-9:80. A change here
    // means sh/dh/mh clients would move on upgrade (key hash, seed, table layout or Maglev fill
    // changed); only accept it deliberately.
    let list = servers(&[1; 10]);
    for (kind, want) in [
        (SchedulerKind::SourceHash, PINNED_SH),
        (SchedulerKind::Maglev, PINNED_MH),
    ] {
        let s = Scheduler::new(kind, &list);
        let got: Vec<usize> = (0..12)
            .map(|k| s.pick(&ctx(k), ALWAYS).expect("eligible"))
            .collect();
        assert_eq!(got, want, "{kind}");
    }
}

const PINNED_SH: [usize; 12] = [9, 8, 8, 4, 0, 7, 1, 0, 5, 2, 1, 8];
const PINNED_MH: [usize; 12] = [9, 8, 2, 8, 2, 0, 4, 1, 0, 2, 0, 6];
