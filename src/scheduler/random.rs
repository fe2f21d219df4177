//! `random` and `p2c`: weighted random, and the power of two (weighted random) choices.
//!
//! A draw is one `fastrand` number below Σw and a binary search in the cumulative weights
//! (O(log n), no allocation; `fastrand`'s generator is thread-local, so there is no lock).
//!
//! `random` redraws up to [`DRAWS`] times when the drawn server is ineligible (rejection
//! sampling: the weight shares among the eligible servers are kept). If all draws miss, one pass
//! sums the eligible weight and a second finds a weighted draw within it, so the shares stay
//! exact even when most of the weight is ineligible (a plain scan from a random start would hand
//! a down server's share to its neighbour in the list).
//!
//! `p2c` draws two *distinct* eligible servers that way and takes the one with the lower
//! active/weight (cross multiplication, as `wlc`; Mitzenmacher's "power of two choices", Envoy's
//! `LEAST_REQUEST` default, LVS `twos`). On a tie the first draw wins, so with equal loads the
//! shares are the weight shares. With one eligible server it is picked.

use super::{less_loaded, Found, Members, SchedServer};

/// Draws tried before the two-pass weighted scan. With a fraction f of the weight ineligible the
/// scan is reached with probability f⁴.
const DRAWS: usize = 4;

/// Members and their cumulative weights.
#[derive(Debug)]
pub(super) struct WeightedRandom {
    /// Servers of weight > 0.
    members: Members,
    /// `cumulative[m]` = weight of members `0..=m`; the last is the total.
    cumulative: Box<[u64]>,
}

impl WeightedRandom {
    pub(super) fn new(servers: &[SchedServer]) -> WeightedRandom {
        let members = Members::new(servers);
        let cumulative = members
            .weight
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        WeightedRandom {
            members,
            cumulative,
        }
    }

    pub(super) fn pick<F: Fn(usize) -> Option<u64>>(&self, load: &F) -> Option<usize> {
        self.pick_member(load, None)
            .map(|f| self.members.server(f.member))
    }

    /// One weighted draw: a member position.
    fn draw(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        let r = fastrand::u64(0..total.max(1));
        self.cumulative.partition_point(|&c| c <= r)
    }

    /// A weighted-random eligible member other than `except`: up to [`DRAWS`] draws, then the
    /// two-pass weighted scan.
    fn pick_member<F: Fn(usize) -> Option<u64>>(
        &self,
        load: &F,
        except: Option<usize>,
    ) -> Option<Found> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        for _ in 0..DRAWS {
            let member = self.draw();
            if Some(member) == except {
                continue;
            }
            if let Some(active) = load(self.members.server(member)) {
                return Some(Found {
                    steps: 0,
                    member,
                    active,
                });
            }
        }
        self.weighted_scan(load, except)
    }

    /// The slow path: one pass sums the weight of the eligible members, a draw below that sum,
    /// and a second pass finds the member it falls on. Exact weight shares among the eligible,
    /// at the cost of up to 2·n calls to `load`. If eligibility changed between the passes (a
    /// concurrent health flip), the last eligible member seen is taken.
    fn weighted_scan<F: Fn(usize) -> Option<u64>>(
        &self,
        load: &F,
        except: Option<usize>,
    ) -> Option<Found> {
        let candidates = || {
            (0..self.members.len())
                .filter(move |&m| Some(m) != except)
                .filter_map(|m| {
                    load(self.members.server(m)).map(|active| Found {
                        steps: 0,
                        member: m,
                        active,
                    })
                })
        };
        let total: u64 = candidates()
            .map(|f| u64::from(self.members.weight[f.member]))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = fastrand::u64(0..total);
        let mut last = None;
        for f in candidates() {
            let w = u64::from(self.members.weight[f.member]);
            if r < w {
                return Some(f);
            }
            r -= w;
            last = Some(f);
        }
        last
    }
}

/// `p2c`: two distinct weighted-random eligible candidates, the less loaded per weight wins.
#[derive(Debug)]
pub(super) struct PowerOfTwo {
    /// The weighted draw, shared with `random`.
    random: WeightedRandom,
}

impl PowerOfTwo {
    pub(super) fn new(servers: &[SchedServer]) -> PowerOfTwo {
        PowerOfTwo {
            random: WeightedRandom::new(servers),
        }
    }

    pub(super) fn pick<F: Fn(usize) -> Option<u64>>(&self, load: &F) -> Option<usize> {
        let r = &self.random;
        let a = r.pick_member(load, None)?;
        let winner = match r.pick_member(load, Some(a.member)) {
            Some(b)
                if less_loaded(
                    b.active,
                    r.members.weight[b.member],
                    a.active,
                    r.members.weight[a.member],
                ) =>
            {
                b
            }
            _ => a,
        };
        Some(r.members.server(winner.member))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_shares, counts, ctx, sched, ALWAYS};
    use super::super::SchedulerKind;

    const RANDOM: SchedulerKind = SchedulerKind::Random;
    const P2C: SchedulerKind = SchedulerKind::PowerOfTwo;

    /// 100k picks: a share's binomial σ is at most √(0.25/10⁵) ≈ 0.16 %; 5σ ≈ 0.8 %. The
    /// generator is seeded per test, so a pass is reproducible.
    const TOLERANCE: f64 = 0.008;
    const PICKS: usize = 100_000;

    #[test]
    fn random_shares_follow_the_weights() {
        fastrand::seed(1);
        let weights = [1, 2, 3, 4, 0];
        let c = counts(&sched(RANDOM, &weights), 5, PICKS, ALWAYS);
        assert_eq!(c[4], 0);
        assert_shares(&c, &weights, TOLERANCE);
    }

    #[test]
    fn random_keeps_weight_shares_among_the_eligible_servers() {
        fastrand::seed(2);
        let s = sched(RANDOM, &[1, 2, 3, 4]);
        let c = counts(&s, 4, PICKS, |i| (i != 3).then_some(0));
        assert_eq!(c[3], 0);
        assert_shares(&c, &[1, 2, 3, 0], TOLERANCE);
    }

    #[test]
    fn random_finds_a_rare_eligible_server() {
        fastrand::seed(3);
        // Draws almost always hit the heavy server, which is down; the scan finds the light one.
        let s = sched(RANDOM, &[1_000_000, 1]);
        for _ in 0..100 {
            assert_eq!(s.pick(&ctx(1), |i| (i == 1).then_some(0)), Some(1));
        }
    }

    #[test]
    fn p2c_with_equal_loads_follows_the_weights() {
        fastrand::seed(4);
        let weights = [1, 2, 3, 4];
        let c = counts(&sched(P2C, &weights), 4, PICKS, ALWAYS);
        assert_shares(&c, &weights, TOLERANCE);
    }

    #[test]
    fn p2c_takes_the_less_loaded_of_two() {
        fastrand::seed(5);
        // Two servers: both are always the candidates, so the idle one always wins.
        let s = sched(P2C, &[1, 1]);
        for _ in 0..1000 {
            assert_eq!(s.pick(&ctx(1), |i| Some([100, 0][i])), Some(1));
        }
        // Three equal servers at 0, 50, 100: the busiest never wins (its rival is always less
        // loaded), and the idle one wins whenever it is drawn, i.e. in 2/3 of the picks.
        let s = sched(P2C, &[1, 1, 1]);
        let c = counts(&s, 3, PICKS, |i| Some([0, 50, 100][i]));
        assert_eq!(c[2], 0);
        let idle = c[0] as f64 / PICKS as f64;
        assert!((idle - 2.0 / 3.0).abs() < TOLERANCE, "{c:?}");
    }

    #[test]
    fn p2c_compares_load_per_weight() {
        fastrand::seed(6);
        // 1 active at weight 1 (1.0) vs 5 active at weight 10 (0.5): the heavier, busier server.
        let s = sched(P2C, &[1, 10]);
        for _ in 0..1000 {
            assert_eq!(s.pick(&ctx(1), |i| Some([1, 5][i])), Some(1));
        }
    }

    #[test]
    fn p2c_with_one_eligible_server_picks_it() {
        fastrand::seed(7);
        let s = sched(P2C, &[5, 5, 5]);
        for _ in 0..100 {
            assert_eq!(s.pick(&ctx(1), |i| (i == 2).then_some(9)), Some(2));
        }
    }
}
