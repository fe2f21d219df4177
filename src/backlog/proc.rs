//! What `/proc` tells about the backlog: the host's limits (`/proc/sys`), the listen and SYN
//! cookie counters (`/proc/net/netstat`), which process holds which socket (`/proc/[pid]/fd`), and
//! which processes are ballast.
//!
//! When sock_diag netlink is not available, [`proc_net_listeners`] lists the listening sockets
//! from `/proc/net/tcp` and `/proc/net/tcp6` instead: their queue lengths, owners and inodes, but
//! not their maxima, which those files do not show.
//!
//! Everything here is read in the network namespace of the calling process: `/proc/sys/net` and
//! `/proc/net/netstat` are per namespace, like the sockets sock_diag lists.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::diag::ListenSocket;
use super::{Counters, HostLimits, Process};

/// Reads one integer sysctl, e.g. `net/core/somaxconn`; `None` when unreadable or not a number.
pub(crate) fn sysctl(name: &str) -> Option<u64> {
    std::fs::read_to_string(Path::new("/proc/sys").join(name))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The host's limits on listen backlogs and SYN queues.
pub(crate) fn host_limits() -> HostLimits {
    HostLimits {
        somaxconn: sysctl("net/core/somaxconn").and_then(|v| u32::try_from(v).ok()),
        tcp_max_syn_backlog: sysctl("net/ipv4/tcp_max_syn_backlog")
            .and_then(|v| u32::try_from(v).ok()),
        tcp_syncookies: sysctl("net/ipv4/tcp_syncookies").and_then(|v| u8::try_from(v).ok()),
    }
}

/// The counters of one `/proc/net/netstat` (or `/proc/net/snmp`) text: section → name → value.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Netstat(HashMap<String, HashMap<String, u64>>);

impl Netstat {
    /// Parses the header/value line pairs of `/proc/net/netstat`:
    ///
    /// ```text
    /// TcpExt: SyncookiesSent SyncookiesRecv … ListenOverflows ListenDrops …
    /// TcpExt: 0 0 … 12 12 …
    /// ```
    ///
    /// Values are matched to names by position within each pair, so fields the kernel adds or
    /// reorders are found by name. A pair whose lines disagree on section or field count, and
    /// values that are not numbers, are skipped rather than guessed at.
    pub(crate) fn parse(text: &str) -> Netstat {
        let mut out: HashMap<String, HashMap<String, u64>> = HashMap::new();
        let mut lines = text.lines();
        while let Some(header) = lines.next() {
            let Some(values) = lines.next() else { break };
            let (Some((section, names)), Some((vsection, nums))) =
                (header.split_once(':'), values.split_once(':'))
            else {
                continue;
            };
            let names: Vec<&str> = names.split_whitespace().collect();
            let nums: Vec<&str> = nums.split_whitespace().collect();
            if section.trim() != vsection.trim() || names.len() != nums.len() {
                continue;
            }
            let map = out.entry(section.trim().to_owned()).or_default();
            for (name, num) in names.into_iter().zip(nums) {
                if let Ok(v) = num.parse() {
                    map.insert(name.to_owned(), v);
                }
            }
        }
        Netstat(out)
    }

    /// The counter `name` of `section` (e.g. `TcpExt`, `ListenOverflows`).
    pub(crate) fn get(&self, section: &str, name: &str) -> Option<u64> {
        self.0.get(section).and_then(|m| m.get(name)).copied()
    }

    /// The counters `ballast backlog` reports.
    pub(crate) fn counters(&self) -> Counters {
        let tcp = |name| self.get("TcpExt", name);
        Counters {
            listen_overflows: tcp("ListenOverflows"),
            listen_drops: tcp("ListenDrops"),
            syncookies_sent: tcp("SyncookiesSent"),
            syncookies_recv: tcp("SyncookiesRecv"),
            syncookies_failed: tcp("SyncookiesFailed"),
            req_q_full_drop: tcp("TCPReqQFullDrop"),
            req_q_full_do_cookies: tcp("TCPReqQFullDoCookies"),
        }
    }
}

/// Reads and parses `/proc/net/netstat`.
pub(crate) fn netstat() -> std::io::Result<Netstat> {
    std::fs::read_to_string("/proc/net/netstat").map(|t| Netstat::parse(&t))
}

/// `st` of a listening socket in `/proc/net/tcp` (TCP_LISTEN).
const TCP_LISTEN: &str = "0A";

/// An address as `/proc/net/tcp{,6}` prints it: the address's bytes in network order, printed
/// as native-endian 32-bit words in hex (`0100007F` is 127.0.0.1 on little-endian), then the port
/// in hex.
fn proc_net_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The listening sockets in one `/proc/net/tcp` or `/proc/net/tcp6` text. For a listening socket
/// `rx_queue` is the accept queue's length; the maximum is not shown.
pub(crate) fn parse_proc_net_tcp(text: &str) -> Vec<ListenSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(3) != Some(&TCP_LISTEN) {
                return None;
            }
            let (_, rx) = f.get(4)?.split_once(':')?;
            Some(ListenSocket {
                local: proc_net_addr(f.get(1)?)?,
                queue: u32::from_str_radix(rx, 16).ok()?,
                max: None,
                uid: f.get(7)?.parse().ok()?,
                inode: f.get(9)?.parse().ok()?,
                drops: None,
            })
        })
        .collect()
}

/// Every listening TCP socket from `/proc/net/tcp` and `/proc/net/tcp6` (the latter may be
/// missing when IPv6 is off).
///
/// # Errors
/// When `/proc/net/tcp` cannot be read.
pub(crate) fn proc_net_listeners() -> std::io::Result<Vec<ListenSocket>> {
    let mut out = parse_proc_net_tcp(&std::fs::read_to_string("/proc/net/tcp")?);
    if let Ok(text) = std::fs::read_to_string("/proc/net/tcp6") {
        out.extend(parse_proc_net_tcp(&text));
    }
    Ok(out)
}

/// The inode in a `/proc/[pid]/fd/N` link target such as `socket:[12345]`.
pub(crate) fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// One process that holds a socket, and the fd number it holds it as.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    /// The process.
    pub(crate) process: Process,
    /// The file descriptor number in that process.
    pub(crate) fd: u32,
}

/// Which processes hold which socket inodes, from `/proc/[pid]/fd`, for the inodes in `wanted`.
/// Directories the caller may not read (other users' processes, unless root) are skipped: their
/// sockets stay without an owner. Returns the map and how many processes could not be read.
pub(crate) fn socket_holders(
    wanted: &std::collections::HashSet<u64>,
) -> (HashMap<u64, Vec<Holder>>, usize) {
    let mut out: HashMap<u64, Vec<Holder>> = HashMap::new();
    let mut unreadable = 0;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (out, unreadable);
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            unreadable += 1;
            continue;
        };
        let mut comm = None;
        for fd in fds.flatten() {
            let Some(fdnum) = fd.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(&l))
            else {
                continue;
            };
            if !wanted.contains(&inode) {
                continue;
            }
            let comm = comm.get_or_insert_with(|| process_name(pid)).clone();
            out.entry(inode).or_default().push(Holder {
                process: Process { pid, comm },
                fd: fdnum,
            });
        }
    }
    for holders in out.values_mut() {
        holders.sort_by_key(|h| (h.process.pid, h.fd));
    }
    (out, unreadable)
}

/// `/proc/[pid]/comm`, or `?` when it cannot be read.
pub(crate) fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

/// Whether process `pid` runs a ballast binary: its executable is named `ballast` (readable for
/// one's own processes, or as root), or else its command name is.
pub(crate) fn is_ballast(pid: u32) -> bool {
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => exe
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == "ballast" || n == "ballast (deleted)"),
        Err(_) => process_name(pid) == "ballast",
    }
}

/// The configuration file a `ballast run` process was started with, from its command line
/// (`/proc/[pid]/cmdline`), made absolute against its working directory. `None` for other
/// subcommands (e.g. `demo`) or when unreadable.
pub(crate) fn ballast_config_path(pid: u32) -> Option<PathBuf> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let path = config_arg(&args)?;
    if path.is_absolute() {
        return Some(path);
    }
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    Some(cwd.join(path))
}

/// The `-c`/`--config` value of a `ballast run` command line (`args[0]` is the program).
pub(crate) fn config_arg(args: &[String]) -> Option<PathBuf> {
    let mut rest = args.iter().skip(1).skip_while(|a| a.starts_with('-'));
    if rest.next().map(String::as_str) != Some("run") {
        return None;
    }
    let mut rest = rest.peekable();
    while let Some(a) = rest.next() {
        if a == "-c" || a == "--config" {
            return rest.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
        if let Some(v) = a.strip_prefix("-c").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(v.strip_prefix('=').unwrap_or(v)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a real `/proc/net/netstat` (Linux 6.x), shortened in the middle.
    const NETSTAT: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts PruneCalled ListenOverflows ListenDrops TCPReqQFullDoCookies TCPReqQFullDrop TCPBacklogDrop
TcpExt: 7 5 1 0 0 12 14 3 2 0
IpExt: InNoRoutes InTruncatedPkts InMcastPkts OutMcastPkts InOctets OutOctets
IpExt: 0 0 0 0 123456789 987654321
MPTcpExt: MPCapableSYNRX MPCapableSYNTX
MPTcpExt: 0 0
";

    #[test]
    fn netstat_counters_are_found_by_name() {
        let n = Netstat::parse(NETSTAT);
        let c = n.counters();
        assert_eq!(c.listen_overflows, Some(12));
        assert_eq!(c.listen_drops, Some(14));
        assert_eq!(c.syncookies_sent, Some(7));
        assert_eq!(c.syncookies_recv, Some(5));
        assert_eq!(c.syncookies_failed, Some(1));
        assert_eq!(c.req_q_full_do_cookies, Some(3));
        assert_eq!(c.req_q_full_drop, Some(2));
        assert_eq!(n.get("IpExt", "OutOctets"), Some(987_654_321));
    }

    #[test]
    fn netstat_fields_in_another_order_are_still_found() {
        let n = Netstat::parse("TcpExt: ListenDrops Foo ListenOverflows\nTcpExt: 9 1 8\n");
        assert_eq!(n.counters().listen_drops, Some(9));
        assert_eq!(n.counters().listen_overflows, Some(8));
        assert_eq!(n.counters().syncookies_sent, None);
    }

    #[test]
    fn netstat_pairs_that_disagree_are_skipped_not_guessed() {
        let text = "TcpExt: ListenOverflows ListenDrops\nTcpExt: 5\nIpExt: InNoRoutes\nTcpExt: 3\n\
                    TcpExt: ListenDrops\nTcpExt: x\n";
        let n = Netstat::parse(text);
        assert_eq!(n.get("TcpExt", "ListenOverflows"), None);
        assert_eq!(n.get("TcpExt", "ListenDrops"), None);
        assert_eq!(n.get("IpExt", "InNoRoutes"), None);
        // A missing last line and an empty text are no error either.
        assert_eq!(Netstat::parse("TcpExt: A B\n").get("TcpExt", "A"), None);
        assert_eq!(Netstat::parse(""), Netstat::default());
    }

    #[test]
    fn the_running_kernel_has_the_listen_counters() {
        let n = netstat().expect("/proc/net/netstat is readable");
        assert!(n.counters().listen_overflows.is_some());
        assert!(n.counters().listen_drops.is_some());
    }

    /// Two lines of a real `/proc/net/tcp` (x86-64): a listener on 127.0.0.1:8080 with 3
    /// connections waiting, and an established connection.
    const PROC_NET_TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000  1000        0 39616747 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 39616750 1 0000000000000000 20 4 30 10 -1
";

    /// A listener on [::1]:443 from `/proc/net/tcp6`.
    const PROC_NET_TCP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
";

    #[test]
    #[cfg(target_endian = "little")]
    fn proc_net_tcp_listeners_give_address_queue_uid_and_inode() {
        let v4 = parse_proc_net_tcp(PROC_NET_TCP);
        assert_eq!(
            v4,
            vec![ListenSocket {
                local: "127.0.0.1:8080".parse().expect("addr"),
                queue: 3,
                max: None,
                uid: 1000,
                inode: 39_616_747,
                drops: None,
            }]
        );
        let v6 = parse_proc_net_tcp(PROC_NET_TCP6);
        assert_eq!(v6.len(), 1);
        assert_eq!(v6[0].local, "[::1]:443".parse().expect("addr"));
        assert_eq!(parse_proc_net_tcp("garbage\n 0: x y 0A"), Vec::new());
    }

    #[test]
    fn proc_net_tcp_agrees_with_sock_diag_on_a_real_queue() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let _c = std::net::TcpStream::connect(addr).expect("connect");
        let from_proc = proc_net_listeners().expect("readable");
        let p = from_proc.iter().find(|s| s.local == addr).expect("listed");
        let from_diag = super::super::diag::listening_sockets().expect("sock_diag");
        let d = from_diag.iter().find(|s| s.local == addr).expect("listed");
        assert_eq!((p.queue, p.inode, p.uid), (d.queue, d.inode, d.uid));
        assert_eq!(p.queue, 1);
    }

    #[test]
    fn socket_links_give_their_inode() {
        assert_eq!(
            socket_inode(Path::new("socket:[39616747]")),
            Some(39_616_747)
        );
        assert_eq!(socket_inode(Path::new("pipe:[12]")), None);
        assert_eq!(socket_inode(Path::new("/dev/null")), None);
        assert_eq!(socket_inode(Path::new("socket:[x]")), None);
    }

    #[test]
    fn the_config_path_is_taken_from_a_run_command_line() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let p = |s: &str| config_arg(&args(s));
        assert_eq!(p("ballast run -c /etc/b.toml"), Some("/etc/b.toml".into()));
        assert_eq!(p("ballast run --config b.toml"), Some("b.toml".into()));
        assert_eq!(p("ballast run --config=b.toml"), Some("b.toml".into()));
        assert_eq!(p("ballast run -cb.toml"), Some("b.toml".into()));
        assert_eq!(p("/usr/bin/ballast run -c"), None);
        assert_eq!(p("ballast demo --port 8080"), None);
        assert_eq!(p("ballast check -c b.toml"), None);
        assert_eq!(p("ballast"), None);
    }

    #[test]
    fn this_process_is_found_holding_its_own_socket() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).expect("link");
        let inode = socket_inode(&link).expect("a socket");
        let (holders, _) = socket_holders(&[inode].into_iter().collect());
        let h = holders.get(&inode).expect("found");
        assert_eq!(h[0].process.pid, std::process::id());
        assert_eq!(h[0].fd, u32::try_from(l.as_raw_fd()).expect("fd"));
    }
}
