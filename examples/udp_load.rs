//! UDP load generator and echo server for `bench/udp.sh`.
//!
//! ```text
//! udp_load echo ADDR...                       # echo servers, one thread each, until killed
//! udp_load load TARGET FLOWS SECONDS [SIZE]   # FLOWS clients in request/response lockstep
//! ```
//!
//! `load` runs FLOWS concurrent clients on one thread, each on its own socket (one source port,
//! so one flow for a balancer): send a datagram of SIZE bytes (default 64), wait for the answer
//! (at most 1 s, else it counts as lost), repeat, for SECONDS. It prints one line:
//! `dgrams/s=… p50_us=… p99_us=… lost=…`, where dgrams/s counts answered requests per second and
//! the percentiles are round-trip times.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

fn usage() -> ! {
    eprintln!("usage: udp_load echo ADDR... | udp_load load TARGET FLOWS SECONDS [SIZE]");
    std::process::exit(64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("echo") if args.len() > 1 => echo(&args[1..]),
        Some("load") if args.len() >= 4 => {
            let parse = |i: usize| -> u64 { args[i].parse().unwrap_or_else(|_| usage()) };
            let target: SocketAddr = args[1].parse().unwrap_or_else(|_| usage());
            let size = if args.len() > 4 { parse(4) } else { 64 };
            load(target, parse(2), parse(3), size);
        }
        _ => usage(),
    }
}

/// Echo servers: a blocking loop per address, as fast as one thread can go.
fn echo(addrs: &[String]) {
    let mut threads = Vec::new();
    for a in addrs {
        let socket = std::net::UdpSocket::bind(a.as_str()).unwrap_or_else(|e| {
            eprintln!("cannot bind {a}: {e}");
            std::process::exit(1)
        });
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

fn load(target: SocketAddr, flows: u64, seconds: u64, size: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("cannot start a runtime: {e}");
            std::process::exit(1)
        });
    rt.block_on(async move {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..flows {
            tasks.push(tokio::spawn(client(target, deadline, size as usize)));
        }
        let mut rtts: Vec<u32> = Vec::new();
        let mut lost = 0u64;
        for t in tasks {
            if let Ok((r, l)) = t.await {
                rtts.extend(r);
                lost += l;
            }
        }
        rtts.sort_unstable();
        let pct = |p: f64| -> u32 {
            if rtts.is_empty() {
                return 0;
            }
            let i = ((rtts.len() as f64 - 1.0) * p).round() as usize;
            rtts[i.min(rtts.len() - 1)]
        };
        println!(
            "dgrams/s={:.0} p50_us={} p99_us={} lost={}",
            rtts.len() as f64 / seconds as f64,
            pct(0.50),
            pct(0.99),
            lost
        );
    });
}

/// One flow in lockstep; returns its round trips (µs) and how many requests went unanswered.
async fn client(target: SocketAddr, deadline: Instant, size: usize) -> (Vec<u32>, u64) {
    let mut rtts = Vec::with_capacity(1 << 16);
    let mut lost = 0;
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
        return (rtts, 1);
    };
    if socket.connect(target).await.is_err() {
        return (rtts, 1);
    }
    let payload = vec![b'x'; size.max(1)];
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        let sent = Instant::now();
        if socket.send(&payload).await.is_err() {
            lost += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
            Ok(Ok(_)) => rtts.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)),
            _ => lost += 1,
        }
    }
    (rtts, lost)
}
