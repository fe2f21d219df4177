//! ballast: a load balancer for Linux.
//!
//! One program for what operators otherwise assemble from nginx, HAProxy, LVS/ipvsadm and
//! Keepalived. This crate is the library; `src/main.rs` is a thin binary over [`cli`].
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the TOML file: raw types, validation with file:line:column diagnostics, the validated model, defaults |
//! | [`scheduler`] | which server gets the next connection: rr, wrr, lc, wlc, sh, dh, mh, random, p2c |
//! | [`upstream`] | server groups, per-server counters and states, the snapshot the data path reads, selection with backups, limits and the sorry server |
//! | [`persistence`] | client → server memory with an idle timeout (Keepalived `persistence_timeout`, `ipvsadm -p`) |
//! | [`health`] | active and passive checks, rise/fall, slow start, operator states, state-change logs and notify commands |
//! | [`listener`] | listening sockets (backlog, SO_REUSEPORT workers), accept loops, connection limits that pause accepting, listener counters and refusals |
//! | [`proxy`] | the data path: TCP proxy with retries, the bidirectional relay, the HTTP reverse proxy, UDP flows, the PROXY protocol codec |
//! | [`tls`] | certificates and key files, SNI selection, ALPN, server verification: rustls configs for both sides |
//! | [`backlog`] | accept queues made visible: listening sockets via sock_diag, somaxconn and listen counters, advice (`ballast backlog`) |
//! | [`runtime`] | start-up, signals, graceful shutdown, the counters table |
//! | [`vrrp`] | high availability: VRRP v2/v3 instances, Keepalived-compatible; VIPs, GARP, tracking, notify |
//! | [`access_log`] | one line per TCP connection and HTTP request, written off the data path, reopened on SIGUSR1 |
//! | [`admin`] | the admin API (JSON, `/api/v1`), Prometheus `/metrics`, the dashboard, the `ballast ctl` client |
//! | [`import`] | Keepalived, nginx and ipvsadm-save configurations read and turned into ballast TOML (`ballast import`, `run --keepalived`) |
//! | [`demo`] | the embedded default configuration and demo backends behind `ballast demo` |
//! | [`privilege`] | least privilege: the switch to `[global] user`/`group` after start, with only the capabilities still needed |
//! | [`secret`] | secrets that never print, and warnings for secret files open to other users |
//! | [`cli`] | the command line |

pub mod access_log;
pub mod admin;
pub mod backlog;
pub mod cli;
pub mod config;
pub mod demo;
pub mod health;
pub mod import;
pub mod listener;
pub mod persistence;
pub mod privilege;
pub mod proxy;
pub mod runtime;
pub mod scheduler;
pub mod secret;
pub mod tls;
pub mod upstream;
pub mod vrrp;
