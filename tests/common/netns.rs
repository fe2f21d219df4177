//! Network-namespace helpers shared by the tests that build labs out of `ip netns`, veth pairs
//! and bridges (VRRP, faults): run a command that must succeed, run code inside a namespace.

use std::process::Command;
use std::thread;

/// Runs `args` (program first); panics with its stderr when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread that has entered network namespace `ns` (`/run/netns/NS`).
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}
