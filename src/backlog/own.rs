//! Ballast's own listeners, seen from outside: which listening sockets belong to ballast
//! processes, which configured listener each belongs to, and which worker.
//!
//! A ballast process binds one SO_REUSEPORT socket per worker, in worker order, so within one
//! process and address the sockets ranked by file descriptor number are workers 0, 1, ….
//! The requested backlog comes from the process's configuration file (`ballast run -c FILE`,
//! found through `/proc/[pid]/cmdline` and `/proc/[pid]/cwd`) as it reads *now*: if the file was
//! edited since ballast started, the figure may be off, and the notes say which file was read.
//! Other ballast processes (`ballast demo`) have no file; their requested backlog is unknown and
//! truncation is inferred as for any other socket.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use super::diag::ListenSocket;
use super::proc::{self, Holder};
use super::{BallastListener, BallastSocket, Truncation, WorkerQueue};
use crate::config::{Config, ListenerConfig};

/// Ballast's listeners found among the listening sockets.
#[derive(Debug, Default)]
pub(crate) struct Owned {
    /// One per ballast process and local address, workers in order.
    pub(crate) listeners: Vec<BallastListener>,
    /// Socket inode → where it sits and the requested backlog, when known.
    by_inode: HashMap<u64, (BallastSocket, Option<u32>)>,
}

impl Owned {
    /// Where socket `inode` sits in a ballast process, if it is ballast's.
    pub(crate) fn socket(&self, inode: u64) -> Option<BallastSocket> {
        self.by_inode.get(&inode).map(|(s, _)| s.clone())
    }

    /// The backlog ballast asked for on socket `inode`, when known.
    pub(crate) fn requested(&self, inode: u64) -> Option<u32> {
        self.by_inode.get(&inode).and_then(|(_, r)| *r)
    }
}

/// The listeners of one ballast process's configuration, or why there are none.
struct ProcessConfig {
    origin: Option<String>,
    listeners: Vec<ListenerConfig>,
}

fn process_config(pid: u32, notes: &mut Vec<String>) -> ProcessConfig {
    let Some(path) = proc::ballast_config_path(pid) else {
        return ProcessConfig {
            origin: None,
            listeners: Vec::new(),
        };
    };
    match Config::load(&path) {
        Ok(cfg) => ProcessConfig {
            origin: Some(path.display().to_string()),
            listeners: cfg.listeners,
        },
        Err(e) => {
            notes.push(format!(
                "ballast pid {pid}: cannot read its configuration {}: {}; its requested \
                 backlogs are unknown",
                path.display(),
                e.to_string().lines().next().unwrap_or_default()
            ));
            ProcessConfig {
                origin: Some(path.display().to_string()),
                listeners: Vec::new(),
            }
        }
    }
}

/// The configured listener that bound `local`: the one whose `bind` is exactly `local`, else the
/// only one that bound port 0 on the same IP.
fn match_listener(listeners: &[ListenerConfig], local: SocketAddr) -> Option<&ListenerConfig> {
    if let Some(l) = listeners.iter().find(|l| l.bind == local) {
        return Some(l);
    }
    let mut ephemeral = listeners
        .iter()
        .filter(|l| l.bind.port() == 0 && l.bind.ip() == local.ip());
    match (ephemeral.next(), ephemeral.next()) {
        (Some(l), None) => Some(l),
        _ => None,
    }
}

/// Groups the sockets held by ballast processes (`ballast_pids[pid] == true`) into listeners
/// and workers.
pub(crate) fn group(
    found: &[ListenSocket],
    holders: &HashMap<u64, Vec<Holder>>,
    ballast_pids: &HashMap<u32, bool>,
    somaxconn: Option<u32>,
    notes: &mut Vec<String>,
) -> Owned {
    // (pid, local) → [(fd, socket)]
    let mut groups: BTreeMap<(u32, SocketAddr), Vec<(u32, &ListenSocket)>> = BTreeMap::new();
    for s in found {
        for h in holders.get(&s.inode).into_iter().flatten() {
            if ballast_pids.get(&h.process.pid).copied().unwrap_or(false) {
                groups
                    .entry((h.process.pid, s.local))
                    .or_default()
                    .push((h.fd, s));
            }
        }
    }
    let mut configs: HashMap<u32, ProcessConfig> = HashMap::new();
    let mut owned = Owned::default();
    for ((pid, local), mut sockets) in groups {
        sockets.sort_by_key(|(fd, _)| *fd);
        // One socket held through several fds (dup(2): ballast keeps a copy of each listening
        // socket for a binary upgrade) is one worker, at its lowest fd.
        let mut seen = std::collections::HashSet::new();
        sockets.retain(|(_, s)| seen.insert(s.inode));
        let cfg = configs
            .entry(pid)
            .or_insert_with(|| process_config(pid, notes));
        let matched = match_listener(&cfg.listeners, local);
        let requested = matched.map(|l| l.backlog);
        let name = matched.map(|l| l.name.clone());
        let workers: Vec<WorkerQueue> = sockets
            .iter()
            .enumerate()
            .map(|(worker, (_, s))| WorkerQueue {
                worker,
                queue: s.queue,
                max: s.max,
                accepted: None,
                inode: s.inode,
                drops: s.drops.map(u64::from),
            })
            .collect();
        for (worker, (_, s)) in sockets.iter().enumerate() {
            owned.by_inode.insert(
                s.inode,
                (
                    BallastSocket {
                        pid,
                        listener: name.clone(),
                        worker,
                    },
                    requested,
                ),
            );
        }
        let max = workers.first().and_then(|w| w.max);
        owned.listeners.push(BallastListener {
            pid,
            config: cfg.origin.clone(),
            listener: name,
            local,
            requested_backlog: requested,
            truncated: match requested {
                Some(r) => Truncation::known(r, max),
                None => Truncation::infer(max, somaxconn),
            },
            workers,
        });
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backlog::Process;

    fn listener(name: &str, bind: &str, backlog: u32) -> ListenerConfig {
        let text = format!(
            "[[listener]]\nname = \"{name}\"\nbind = \"{bind}\"\nupstream = \"u\"\nbacklog = \
             {backlog}\n\n[[upstream]]\nname = \"u\"\n\n[[upstream.server]]\naddress = \
             \"127.0.0.1:9\"\n"
        );
        let cfg = Config::from_str(&text, "t.toml").expect("valid");
        cfg.listeners.into_iter().next().expect("one listener")
    }

    #[test]
    fn listeners_match_by_address_or_by_the_only_ephemeral_bind() {
        let ls = [
            listener("web", "0.0.0.0:80", 511),
            listener("tmp", "127.0.0.1:0", 100),
        ];
        let m = |a: &str| match_listener(&ls, a.parse().expect("addr")).map(|l| l.name.clone());
        assert_eq!(m("0.0.0.0:80").as_deref(), Some("web"));
        assert_eq!(m("127.0.0.1:41234").as_deref(), Some("tmp"));
        assert_eq!(m("127.0.0.2:41234"), None);
        let two = [
            listener("a", "127.0.0.1:0", 1),
            listener("b", "127.0.0.1:0", 2),
        ];
        assert!(match_listener(&two, "127.0.0.1:5".parse().expect("addr")).is_none());
    }

    /// A pid no process has (above the kernel's PID_MAX_LIMIT), so nothing real is read.
    const PID: u32 = u32::MAX - 1;

    #[test]
    fn sockets_of_one_process_and_address_become_workers_in_fd_order() {
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let s = |inode, queue| ListenSocket {
            local,
            queue,
            max: Some(128),
            uid: 0,
            inode,
            drops: None,
        };
        let found = vec![s(11, 3), s(10, 1), s(12, 0)];
        let holder = |fd| Holder {
            process: Process {
                pid: PID,
                comm: "ballast".into(),
            },
            fd,
        };
        let holders: HashMap<u64, Vec<Holder>> = [
            (10, vec![holder(7)]),
            (11, vec![holder(8)]),
            (
                12,
                vec![Holder {
                    process: Process {
                        pid: PID - 1,
                        comm: "other".into(),
                    },
                    fd: 3,
                }],
            ),
        ]
        .into_iter()
        .collect();
        let pids: HashMap<u32, bool> = [(PID, true), (PID - 1, false)].into_iter().collect();
        let mut notes = Vec::new();
        let owned = group(&found, &holders, &pids, Some(4096), &mut notes);
        assert_eq!(owned.listeners.len(), 1);
        let l = &owned.listeners[0];
        assert_eq!(l.pid, PID);
        let order: Vec<(usize, u64, u32)> = l
            .workers
            .iter()
            .map(|w| (w.worker, w.inode, w.queue))
            .collect();
        assert_eq!(order, vec![(0, 10, 1), (1, 11, 3)]);
        assert_eq!(l.truncated, Truncation::No);
        assert_eq!(owned.socket(11).map(|b| b.worker), Some(1));
        assert!(owned.socket(12).is_none());
    }

    #[test]
    fn a_socket_held_through_two_fds_is_one_worker() {
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let s = |inode| ListenSocket {
            local,
            queue: 0,
            max: Some(128),
            uid: 0,
            inode,
            drops: None,
        };
        let found = vec![s(10), s(11)];
        let holder = |fd| Holder {
            process: Process {
                pid: PID,
                comm: "ballast".into(),
            },
            fd,
        };
        let holders: HashMap<u64, Vec<Holder>> = [
            (10, vec![holder(7), holder(20)]),
            (11, vec![holder(8), holder(21)]),
        ]
        .into_iter()
        .collect();
        let pids: HashMap<u32, bool> = [(PID, true)].into_iter().collect();
        let owned = group(&found, &holders, &pids, Some(4096), &mut Vec::new());
        let inodes: Vec<u64> = owned.listeners[0].workers.iter().map(|w| w.inode).collect();
        assert_eq!(inodes, vec![10, 11]);
    }
}
