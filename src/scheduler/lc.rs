//! `lc` and `wlc`: least connections, plain or per unit of weight (LVS `ip_vs_lc.c`,
//! `ip_vs_wlc.c`).
//!
//! Every pick looks at every eligible server once (O(n), as LVS does) and keeps the least loaded:
//! `lc` compares active connections, `wlc` compares active/weight by cross multiplication
//! (`a1·w2 < a2·w1`, as LVS does, in u128 so it cannot overflow). The scan starts at a rotating
//! position and only a strictly smaller load replaces the current best, so among equally loaded
//! servers the first after the rotating start wins. The start then moves past the server picked
//! (as in `rr`), so equally loaded servers take exact turns: neither does the first in the list
//! take every connection, nor does the one after a busier server get double turns.
//!
//! LVS counts inactive connections at 1/50 of an active one in `lc`/`wlc`'s overhead; a full proxy
//! has no such half-closed state to weigh, so ballast uses the active count `load` reports.

use super::{at, less_loaded, Cursor, Members, SchedServer};

/// Least-connection state: the members, a rotating start, and which comparison to use.
#[derive(Debug)]
pub(super) struct LeastConn {
    /// Servers of weight > 0.
    members: Members,
    /// `true` for `wlc` (active/weight), `false` for `lc` (active only).
    weighted: bool,
    /// Rotating start of the scan, for tie-breaking.
    cursor: Cursor,
}

impl LeastConn {
    pub(super) fn new(servers: &[SchedServer], weighted: bool) -> LeastConn {
        LeastConn {
            members: Members::new(servers),
            weighted,
            cursor: Cursor::default(),
        }
    }

    /// Exactly one call to `load` per member.
    pub(super) fn pick<F: Fn(usize) -> Option<u64>>(&self, load: &F) -> Option<usize> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.next();
        // (member, active, step) of the least loaded so far.
        let mut best: Option<(usize, u64, usize)> = None;
        for step in 0..n {
            let m = at(start, step, n);
            let Some(active) = load(self.members.server(m)) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((b, b_active, _)) if self.weighted => less_loaded(
                    active,
                    self.members.weight[m],
                    b_active,
                    self.members.weight[b],
                ),
                Some((_, b_active, _)) => active < b_active,
            };
            if better {
                best = Some((m, active, step));
            }
        }
        let (m, _, step) = best?;
        self.cursor.skip(step);
        Some(self.members.server(m))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{counts, ctx, sched};
    use super::super::SchedulerKind;

    const LC: SchedulerKind = SchedulerKind::LeastConn;
    const WLC: SchedulerKind = SchedulerKind::WeightedLeastConn;

    /// A `load` from a fixed table of active counts (`None` = ineligible).
    fn loads(active: &[Option<u64>]) -> impl Fn(usize) -> Option<u64> + '_ {
        move |i| active[i]
    }

    #[test]
    fn lc_picks_the_server_with_fewest_active_connections_whatever_the_weights() {
        let s = sched(LC, &[10, 1, 5]);
        let l = [Some(7), Some(3), Some(5)];
        for _ in 0..10 {
            assert_eq!(s.pick(&ctx(1), loads(&l)), Some(1));
        }
    }

    #[test]
    fn lc_rotates_among_equally_loaded_servers() {
        let s = sched(LC, &[1, 1, 1, 1]);
        // Servers 0, 2, 3 tie at 2; server 1 is busier.
        let c = counts(&s, 4, 3000, |i| Some(if i == 1 { 9 } else { 2 }));
        assert_eq!(c, vec![1000, 0, 1000, 1000]);
    }

    #[test]
    fn lc_skips_ineligible_and_weight_zero_servers_even_if_idle() {
        let s = sched(LC, &[1, 0, 1]);
        let l = [None, Some(0), Some(50)];
        assert_eq!(s.pick(&ctx(1), loads(&l)), Some(2));
    }

    #[test]
    fn wlc_compares_active_per_weight() {
        // 0 active at weight 1 (ratio 0) beats 5 active at weight 10 (ratio 0.5).
        let s = sched(WLC, &[1, 10]);
        assert_eq!(s.pick(&ctx(1), loads(&[Some(0), Some(5)])), Some(0));
        // 3 at weight 1 (3.0) loses to 20 at weight 10 (2.0), though lc would say the opposite.
        assert_eq!(s.pick(&ctx(1), loads(&[Some(3), Some(20)])), Some(1));
        let lc = sched(LC, &[1, 10]);
        assert_eq!(lc.pick(&ctx(1), loads(&[Some(3), Some(20)])), Some(0));
        // 4/2 vs 10/5: equal ratios tie, and ties rotate.
        let s = sched(WLC, &[2, 5]);
        let c = counts(&s, 2, 1000, |i| Some([4, 10][i]));
        assert_eq!(c, vec![500, 500]);
    }

    #[test]
    fn wlc_cross_multiplication_does_not_overflow_at_the_extremes() {
        let s = sched(WLC, &[u32::MAX, 1]);
        let l = [Some(u64::MAX), Some(u64::MAX / 2)];
        // u64::MAX / u32::MAX ≈ 2^32 is far below (2^63) / 1.
        assert_eq!(s.pick(&ctx(1), loads(&l)), Some(0));
    }

    #[test]
    fn wlc_fills_an_idle_heavy_server_in_proportion_to_its_weight() {
        // Simulate connections that never close: each pick adds one to its server. wlc keeps
        // active/weight level, so the counts end proportional to the weights.
        let s = sched(WLC, &[1, 2, 5]);
        let active = [0, 1, 2].map(|_| std::cell::Cell::new(0u64));
        for _ in 0..800 {
            let i = s
                .pick(&ctx(1), |i| Some(active[i].get()))
                .expect("eligible");
            active[i].set(active[i].get() + 1);
        }
        assert_eq!(active.map(|a| a.get()), [100, 200, 500]);
    }
}
