//! `sh` and `dh`: a weighted bucket table indexed by a hash of the client (`sh`) or local (`dh`)
//! address (LVS `ip_vs_sh.c`, `ip_vs_dh.c`), and the fallback walk `mh` shares.
//!
//! # The table
//!
//! LVS fills 256 buckets by walking the servers and giving each `weight` consecutive buckets per
//! turn, so shares are only roughly proportional (weights 100 and 1 share 256 buckets as 200:2…).
//! ballast sizes the table at `max(1024, 16·n)` buckets rounded up to a power of two (n = servers
//! of weight > 0) and apportions them exactly: each server gets ⌊B·w/Σw⌋ buckets, the leftover go
//! by largest remainder, and every server gets at least one. A server's bucket share is thus
//! within 1/B (≤ 0.1 %) of its weight share. The buckets are then shuffled with a fixed-seed
//! generator (splitmix64 from [`HASH_SEED`]) so that neighbouring buckets belong to unrelated
//! servers. Everything is deterministic: the same servers in the same order give the same table
//! in every process, which is what keeps a client on its server across reloads and failover.
//!
//! # Lookup and fallback
//!
//! The key's xxh3 hash picks the home bucket. If its server is ineligible, the pick walks the
//! table with a stride taken from the other half of the hash (odd, so it visits every bucket of
//! the power-of-two table): different clients of a failed server walk different paths, so its
//! load spreads over the others in proportion to their weights (LVS `sh-fallback` rehashes with an
//! offset to the same end). The walk is bounded by [`FALLBACK_PROBES`]; if that many buckets are
//! all ineligible, one scan over the servers, starting at a position the hash chooses, decides.
//! Both steps are deterministic, so a client keeps its fallback server too while the set of
//! eligible servers stays the same.

use std::fmt;
use std::net::IpAddr;

use super::{hash_ip, Members, SchedServer, HASH_SEED};

/// Smallest bucket table.
const MIN_BUCKETS: usize = 1024;

/// Buckets per server of weight > 0 when that gives more than [`MIN_BUCKETS`].
const BUCKETS_PER_SERVER: usize = 16;

/// How many table entries the fallback walk (of `sh`, `dh` and `mh`) checks before one scan over
/// the servers decides. With a fraction f of the table ineligible the scan is reached with
/// probability f³², e.g. 10⁻¹⁰ for half the servers down.
pub(super) const FALLBACK_PROBES: usize = 32;

/// The bucket table of `sh`/`dh` and the members for the last-resort scan.
pub(super) struct BucketTable {
    /// Server index of each bucket; the length is a power of two (or 0 with no members).
    buckets: Box<[u32]>,
    /// Servers of weight > 0.
    members: Members,
}

impl fmt::Debug for BucketTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketTable")
            .field("buckets", &self.buckets.len())
            .field("members", &self.members)
            .finish()
    }
}

impl BucketTable {
    pub(super) fn new(servers: &[SchedServer]) -> BucketTable {
        let members = Members::new(servers);
        let n = members.len();
        if n == 0 {
            return BucketTable {
                buckets: Box::new([]),
                members,
            };
        }
        let size = n
            .saturating_mul(BUCKETS_PER_SERVER)
            .max(MIN_BUCKETS)
            .next_power_of_two();
        let mut buckets = Vec::with_capacity(size);
        for (m, count) in apportion(&members.weight, size).into_iter().enumerate() {
            buckets.extend(std::iter::repeat_n(members.index[m], count));
        }
        debug_assert_eq!(buckets.len(), size);
        shuffle(&mut buckets);
        BucketTable {
            buckets: buckets.into_boxed_slice(),
            members,
        }
    }

    /// The home bucket of `key`, then the fallback walk.
    pub(super) fn pick<F: Fn(usize) -> Option<u64>>(&self, key: IpAddr, load: &F) -> Option<usize> {
        let len = self.buckets.len();
        if len == 0 {
            return None;
        }
        let h = hash_ip(key);
        let first = (h as usize) & (len - 1);
        // Odd, hence coprime with the power-of-two length: the walk visits every bucket.
        let stride = ((h >> 32) as usize | 1) & (len - 1);
        walk(&self.buckets, first, stride, h, &self.members, load)
    }
}

/// The lookup shared by `sh`, `dh` and `mh`: the server at `table[first]` if eligible, else the
/// first eligible one at `first + k·stride` (k < [`FALLBACK_PROBES`]), else one scan over the
/// members starting at `h mod n`. `stride` must be coprime with the table length and smaller.
pub(super) fn walk<F: Fn(usize) -> Option<u64>>(
    table: &[u32],
    first: usize,
    stride: usize,
    h: u64,
    members: &Members,
    load: &F,
) -> Option<usize> {
    let len = table.len();
    let mut pos = first;
    for _ in 0..FALLBACK_PROBES.min(len) {
        let server = table[pos] as usize;
        if load(server).is_some() {
            return Some(server);
        }
        pos = (pos + stride) % len;
    }
    let n = members.len() as u64;
    let found = members.scan((h % n.max(1)) as usize, load)?;
    Some(members.server(found.member))
}

/// Splits `slots` among `weights` (all > 0) in proportion: floors, then largest remainders, then
/// at least one each (taken from the largest). Needs `slots >= weights.len()`.
fn apportion(weights: &[u32], slots: usize) -> Vec<usize> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let slots_wide = slots as u128;
    let share = |w: u32| slots_wide * u128::from(w);
    let mut counts: Vec<usize> = weights
        .iter()
        .map(|&w| usize::try_from(share(w) / total).unwrap_or(slots))
        .collect();
    let given: usize = counts.iter().sum();
    let mut by_remainder: Vec<usize> = (0..weights.len()).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse(share(weights[i]) % total));
    for &i in by_remainder.iter().take(slots.saturating_sub(given)) {
        counts[i] += 1;
    }
    for i in 0..counts.len() {
        if counts[i] == 0 {
            let largest = (0..counts.len()).max_by_key(|&j| counts[j]).unwrap_or(i);
            counts[largest] -= 1;
            counts[i] = 1;
        }
    }
    debug_assert_eq!(counts.iter().sum::<usize>(), slots);
    counts
}

/// Fisher–Yates with splitmix64 seeded by [`HASH_SEED`]: our own generator, not `fastrand`,
/// because the layout must never change with a dependency's version (it decides which server
/// every client lands on).
fn shuffle(buckets: &mut [u32]) {
    let mut state = HASH_SEED;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..buckets.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        buckets.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::super::testutil::{assert_shares, client_counts, ctx, sched, servers, ALWAYS};
    use super::super::{PickContext, SchedulerKind};
    use super::{apportion, BucketTable, FALLBACK_PROBES};

    const SH: SchedulerKind = SchedulerKind::SourceHash;
    const DH: SchedulerKind = SchedulerKind::DestinationHash;

    /// 10k clients, a share's binomial standard deviation is at most √(0.25/10⁴) = 0.5 %; the
    /// tolerance is 5σ (2.5 %), plus 0.1 % for bucket rounding. The hash is fixed, so a pass is
    /// reproducible, and a real skew (a broken table or hash) is far larger.
    const SHARE_TOLERANCE: f64 = 0.026;

    #[test]
    fn sh_maps_the_same_client_to_the_same_server_every_time_and_after_a_rebuild() {
        let weights = [1, 2, 3, 1, 1];
        let a = sched(SH, &weights);
        let b = sched(SH, &weights);
        for k in 0..2000 {
            let first = a.pick(&ctx(k), ALWAYS);
            for _ in 0..5 {
                assert_eq!(a.pick(&ctx(k), ALWAYS), first);
            }
            assert_eq!(b.pick(&ctx(k), ALWAYS), first, "a rebuilt table must agree");
        }
    }

    #[test]
    fn sh_spreads_clients_evenly_over_equal_servers() {
        let weights = [1, 1, 1, 1];
        let c = client_counts(&sched(SH, &weights), 4, 10_000, ALWAYS);
        assert_shares(&c, &weights, SHARE_TOLERANCE);
    }

    #[test]
    fn sh_spreads_clients_in_proportion_to_weight() {
        let weights = [1, 2, 3, 4, 0];
        let c = client_counts(&sched(SH, &weights), 5, 10_000, ALWAYS);
        assert_eq!(c[4], 0, "weight 0 is never picked");
        assert_shares(&c, &weights, SHARE_TOLERANCE);
    }

    #[test]
    fn sh_falls_back_to_an_eligible_server_and_spreads_the_displaced_clients() {
        let weights = [1, 1, 1, 1];
        let s = sched(SH, &weights);
        let down = |i: usize| (i != 2).then_some(0);
        let mut displaced = [0u32; 4];
        for k in 0..10_000 {
            let home = s.pick(&ctx(k), ALWAYS).expect("eligible");
            let now = s.pick(&ctx(k), down).expect("eligible");
            assert_ne!(now, 2);
            if home == 2 {
                displaced[now] += 1;
                assert_eq!(s.pick(&ctx(k), down), Some(now), "fallback is stable too");
            } else {
                assert_eq!(now, home, "clients of surviving servers stay");
            }
        }
        // ~2500 displaced clients over 3 servers: each gets a fair part (≥ 25 %, expected 33 %).
        let total: u32 = displaced.iter().sum();
        for i in [0, 1, 3] {
            assert!(displaced[i] * 4 >= total, "{displaced:?}");
        }
    }

    #[test]
    fn sh_reaches_the_last_eligible_server_beyond_the_probe_limit() {
        // 200 servers, only one eligible: the walk will usually miss it, the scan finds it.
        let s = sched(SH, &[1; 200]);
        const { assert!(200 > FALLBACK_PROBES) };
        for k in 0..100 {
            assert_eq!(s.pick(&ctx(k), |i| (i == 123).then_some(0)), Some(123));
        }
    }

    #[test]
    fn sh_hashes_ipv4_mapped_ipv6_clients_as_ipv4() {
        let s = sched(SH, &[1; 10]);
        for k in 0..200 {
            let v4 = ctx(k);
            let IpAddr::V4(ip) = v4.client else {
                unreachable!()
            };
            let mapped = PickContext {
                client: IpAddr::V6(ip.to_ipv6_mapped()),
                ..v4
            };
            assert_eq!(s.pick(&v4, ALWAYS), s.pick(&mapped, ALWAYS));
        }
    }

    #[test]
    fn dh_keys_on_the_local_address_not_the_client() {
        let weights = [1, 1, 1, 1, 1];
        let s = sched(DH, &weights);
        // One local address: every client goes to the same server.
        let first = s.pick(&ctx(0), ALWAYS);
        for k in 1..500 {
            assert_eq!(s.pick(&ctx(k), ALWAYS), first);
        }
        // Many local addresses spread like sh's clients.
        let mut c = vec![0u64; 5];
        for k in 0..10_000u32 {
            let local = IpAddr::V4(Ipv4Addr::from(0xc000_0000 + k));
            let cx = PickContext { local, ..ctx(7) };
            c[s.pick(&cx, ALWAYS).expect("eligible")] += 1;
        }
        assert_shares(&c, &weights, SHARE_TOLERANCE);
        // And it falls back like sh.
        let home = first.expect("eligible");
        let other = s.pick(&ctx(0), |i| (i != home).then_some(0));
        assert!(other.is_some_and(|o| o != home));
    }

    #[test]
    fn bucket_table_gives_each_server_its_exact_weight_share() {
        let weights = [5, 1, 1, 0, 9];
        let t = BucketTable::new(&servers(&weights));
        assert_eq!(t.buckets.len(), 1024);
        let mut c = [0usize; 5];
        for &b in t.buckets.iter() {
            c[b as usize] += 1;
        }
        // 1024 · w / 16 = 320, 64, 64, 0, 576: exact.
        assert_eq!(c, [320, 64, 64, 0, 576]);
    }

    #[test]
    fn apportion_rounds_by_largest_remainder_and_keeps_every_server() {
        assert_eq!(apportion(&[1, 1, 1], 1024), vec![342, 341, 341]);
        assert_eq!(apportion(&[2, 1], 4), vec![3, 1]);
        assert_eq!(apportion(&[1_000_000, 1], 16), vec![15, 1]);
        assert_eq!(apportion(&[u32::MAX, u32::MAX], 8), vec![4, 4]);
    }

    #[test]
    fn bucket_table_grows_with_the_server_count() {
        let t = BucketTable::new(&servers(&[1; 100]));
        assert_eq!(t.buckets.len(), 2048);
    }
}
