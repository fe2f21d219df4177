//! Health: HAProxy's rise/fall counter machine under random check results, and passive checks
//! (`max_fails` / `fail_timeout`) under random traffic outcomes, with the real checker task on
//! tokio's paused clock.
//!
//! Rise/fall invariants, after every result: a server goes down exactly when `fall` results in a
//! row have failed since its last change, up exactly when `rise` in a row have passed; changes
//! alternate; the streak the machine reports is the run of disagreeing results.
//!
//! Passive invariants, after every outcome (no active check, so no sockets):
//! * an ejection only ever follows `max_fails` failures in a row (no success between, none
//!   counted before the previous ejection) whose span is within `fail_timeout`;
//! * `max_fails` failures in a row starting a fresh run within `fail_timeout` always eject, and
//!   so do any `2 × max_fails − 1` in a row within `fail_timeout` while the server is up (the
//!   window starts with the run, so a run that outlives it starts again);
//! * an ejected server takes no new connection for `fail_timeout`, then is back (nginx);
//! * every ejection and return is counted as one transition.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use ballast::config::Config;
use ballast::health::{Machine, Transition};
use ballast::upstream::Upstream;
use tokio_util::sync::CancellationToken;

/// One seeded run: the counter machine, then passive checks.
pub(crate) fn simulate(seed: u64, trace: bool) -> Result<(), String> {
    let mut log = trace.then(String::new);
    let result = rise_fall(seed, &mut log).and_then(|()| passive(seed, &mut log));
    if let Some(t) = log {
        eprintln!("{t}");
    }
    result
}

fn rise_fall(seed: u64, log: &mut Option<String>) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let rise = rng.u32(1..=5);
    let fall = rng.u32(1..=5);
    let mut m = Machine::new(rise, fall);
    if let Some(t) = log {
        let _ = writeln!(t, "rise {rise} fall {fall}");
    }
    // The model: the state, and every result since it last changed.
    let mut up = true;
    let mut since_change: Vec<bool> = Vec::new();
    let mut last: Option<Transition> = None;
    let mut p_ok = 50;
    for step in 0..rng.usize(50..400) {
        if rng.u32(0..20) == 0 {
            // A new phase: a server that mostly passes, mostly fails, or flaps.
            p_ok = [0, 10, 50, 90, 100][rng.usize(0..5)];
        }
        let ok = rng.u32(0..100) < p_ok;
        let got = m.observe(ok);
        since_change.push(ok);
        let trailing = since_change.iter().rev().take_while(|&&r| r != up).count();
        let needed = if up { fall } else { rise } as usize;
        let want =
            (trailing == needed).then_some(if up { Transition::Down } else { Transition::Up });
        if let Some(t) = log {
            let _ = writeln!(t, "{step}: {ok} → {got:?}");
        }
        if got != want {
            return Err(format!(
                "step {step}: result {ok} after {since_change:?} gave {got:?}, want {want:?} (rise {rise}, fall {fall})"
            ));
        }
        if let Some(t) = got {
            if last == Some(t) {
                return Err(format!("step {step}: {t:?} twice in a row"));
            }
            last = Some(t);
            up = t == Transition::Up;
            since_change.clear();
        }
        let streak = if got.is_some() { 0 } else { trailing };
        if m.is_up() != up || m.streak() as usize != streak || m.in_transition() != (streak > 0) {
            return Err(format!(
                "step {step}: machine up={} streak={}, model up={up} streak={streak}",
                m.is_up(),
                m.streak()
            ));
        }
    }
    Ok(())
}

fn passive(seed: u64, log: &mut Option<String>) -> Result<(), String> {
    // Starts the passive-check clock before any paused runtime moves time on.
    let _ = ballast::health::now_ms();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(passive_run(seed, log))
}

async fn passive_run(seed: u64, log: &mut Option<String>) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
    let max_fails = rng.usize(1..=5);
    let window_ms = [1u64, 50, 1000, 10_000][rng.usize(0..4)];
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\
         [[upstream]]\nname = \"u\"\nmax_fails = {max_fails}\nfail_timeout = \"{window_ms}ms\"\n\
         [[upstream.server]]\naddress = \"127.0.0.1:9\"\n"
    );
    let mut cfg = Config::from_str(&text, "sim.toml").map_err(|e| e.to_string())?;
    let up = Arc::new(Upstream::new(cfg.upstreams.remove(0)));
    let server = Arc::clone(&up.snapshot().servers[0]);
    let stop = CancellationToken::new();
    let checkers = ballast::health::spawn(&[Arc::clone(&up)], &stop).map_err(|e| e.to_string())?;
    let w = window_ms;
    let m = max_fails;
    if let Some(t) = log {
        let _ = writeln!(t, "passive: max_fails {m} fail_timeout {w}ms");
    }
    let start = tokio::time::Instant::now();
    let ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let settle = || async {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    };
    settle().await;
    // The model: failures in a row (their times) since the last success or ejection, and when
    // the current ejection started.
    let mut run: Vec<u64> = Vec::new();
    // How many failures at the end of `run` came while the server was up.
    let mut run_up = 0usize;
    let mut ejected_at: Option<u64> = None;
    let mut ejections = 0u64;
    let mut p_fail = 50;
    for step in 0..rng.usize(50..300) {
        if rng.u32(0..15) == 0 {
            p_fail = [0, 20, 60, 95, 100][rng.usize(0..5)];
        }
        // Gaps around window / max_fails, so runs land on both sides of the window.
        let gap = match rng.u32(0..4) {
            0 => 0,
            1 => rng.u64(0..=w / m as u64 + 1),
            2 => rng.u64(0..=w * 2 / m as u64 + 1),
            _ => rng.u64(0..=w * 3),
        };
        tokio::time::sleep(Duration::from_millis(gap)).await;
        settle().await;
        let now = ms();
        // The ejection is over after fail_timeout: the server is back.
        if let Some(at) = ejected_at {
            let down = server.state.flags().is_down();
            if now < at + w && !down {
                return Err(format!(
                    "step {step}: ejected at {at} ms, back at {now} ms, before fail_timeout"
                ));
            }
            if now >= at + w {
                if down {
                    return Err(format!(
                        "step {step}: ejected at {at} ms, still down at {now} ms"
                    ));
                }
                ejected_at = None;
            }
        }
        let fail = rng.u32(0..100) < p_fail;
        let was_down = server.state.flags().is_down();
        if fail {
            server.passive_failure();
            run.push(now);
            run_up = if was_down { 0 } else { run_up + 1 };
        } else {
            server.passive_success();
            run.clear();
            run_up = 0;
        }
        let ejected = !was_down && server.state.flags().is_down();
        if let Some(t) = log {
            let _ = writeln!(
                t,
                "{now} ms: {} → ejected {ejected}, run {run:?}",
                if fail { "failure" } else { "success" }
            );
        }
        if fail && !was_down {
            let within = |n: usize| run.len() >= n && run[run.len() - 1] - run[run.len() - n] <= w;
            let may = within(m);
            // A run may have started while the server was down (connections opened before the
            // ejection failing later); only failures while up can complete a window.
            let must = (run.len() == m && within(m)) || (run_up >= 2 * m - 1 && within(2 * m - 1));
            if ejected && !may {
                return Err(format!(
                    "step {step}: ejected after failures at {run:?} (max_fails {m}, fail_timeout {w} ms)"
                ));
            }
            if must && !ejected {
                return Err(format!(
                    "step {step}: not ejected after failures at {run:?} (max_fails {m}, fail_timeout {w} ms)"
                ));
            }
        } else if ejected {
            return Err(format!("step {step}: ejected by a success"));
        }
        if ejected {
            ejections += 1;
            ejected_at = Some(now);
            // The checker takes it from here and starts counting afresh.
            settle().await;
            run.clear();
            run_up = 0;
            if !server.state.flags().is_down() || server.is_usable() {
                return Err(format!("step {step}: ejected but usable"));
            }
        }
        let want = ejections * 2 - u64::from(ejected_at.is_some());
        if server.state.transitions() != want {
            return Err(format!(
                "step {step}: {} transitions counted, want {want}",
                server.state.transitions()
            ));
        }
    }
    stop.cancel();
    checkers.join().await;
    Ok(())
}
