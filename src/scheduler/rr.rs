//! `rr`: round robin over the servers of weight > 0 (LVS `ip_vs_rr.c`).
//!
//! A free-running atomic cursor gives each pick its own start position. An ineligible server is
//! skipped, and the cursor then moves past the server picked, so with server `b` down the
//! sequence `a b c` becomes `a c a c`, not `a c c a c c`.

use super::{Cursor, Members, SchedServer};

/// Round-robin state: the members and a cursor.
#[derive(Debug)]
pub(super) struct RoundRobin {
    /// Servers of weight > 0 (weights themselves are ignored, as LVS `rr` does).
    members: Members,
    /// Rotation position (free-running, modulo the member count).
    cursor: Cursor,
}

impl RoundRobin {
    pub(super) fn new(servers: &[SchedServer]) -> RoundRobin {
        RoundRobin {
            members: Members::new(servers),
            cursor: Cursor::default(),
        }
    }

    /// At most one scan over the members.
    pub(super) fn pick<F: Fn(usize) -> Option<u64>>(&self, load: &F) -> Option<usize> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let found = self.members.scan(self.cursor.next() % n, load)?;
        self.cursor.skip(found.steps);
        Some(self.members.server(found.member))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{counts, ctx, sched, ALWAYS};
    use super::super::SchedulerKind;

    #[test]
    fn rr_gives_equal_shares_and_ignores_weights() {
        let s = sched(SchedulerKind::RoundRobin, &[1, 5, 3]);
        let c = counts(&s, 3, 3000, |_| Some(0));
        assert_eq!(c, vec![1000, 1000, 1000]);
    }

    #[test]
    fn rr_follows_index_order() {
        let s = sched(SchedulerKind::RoundRobin, &[1, 1, 1]);
        let seq: Vec<_> = (0..6).map(|_| s.pick(&ctx(1), ALWAYS)).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2].map(Some));
    }

    #[test]
    fn rr_skips_ineligible_and_weight_zero_servers_and_keeps_the_rest_equal() {
        // Server 1 is down, server 3 has weight 0: the other three share exactly.
        let s = sched(SchedulerKind::RoundRobin, &[1, 1, 1, 0, 1]);
        let c = counts(&s, 5, 3000, |i| (i != 1).then_some(0));
        assert_eq!(c, vec![1000, 0, 1000, 0, 1000]);
    }

    #[test]
    fn rr_resumes_after_the_server_it_picked_when_one_is_skipped() {
        let s = sched(SchedulerKind::RoundRobin, &[1, 1, 1]);
        let seq: Vec<_> = (0..4)
            .map(|_| s.pick(&ctx(1), |i| (i != 1).then_some(0)))
            .collect();
        assert_eq!(seq, [0, 2, 0, 2].map(Some));
    }
}
