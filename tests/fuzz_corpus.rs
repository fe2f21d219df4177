//! Replays every committed fuzz seed (`fuzz/corpus/<target>/*`) through the same parser as its
//! fuzz target, plus deterministic near-miss mutations of each seed, so the default test suite
//! covers what the fuzzers start from without a nightly toolchain or cargo-fuzz.
//!
//! Per seed: prefixes (every length for short seeds, a bounded number of evenly spread lengths
//! for long ones) and `BALLAST_FUZZ_ITERS` (default 200) mutants from a seeded xorshift PRNG:
//! flipped bits, random bytes, deleted, duplicated and inserted bytes. A panic fails the test and
//! names the target, the seed and how to rebuild the input. `fuzz/run.sh` raises the count when
//! no fuzzing toolchain is installed.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

/// Prefix lengths tried per seed; seeds up to this long get every length.
const MAX_PREFIXES: usize = 256;

/// Marsaglia's xorshift64: tiny, deterministic, good enough to pick bytes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        // n is a seed length (small); the modulo bias does not matter here.
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that steer the parsers towards their interesting paths.
const DICT: &[u8] = b"{}[]\"'=#!;:.,-_/\\ \t\r\n0123456789abcdefxyz\x00\xff";

fn mutate(seed: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut out = seed.to_vec();
    let edits = 1 + rng.below(4);
    for _ in 0..edits {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => out[at] = rng.next() as u8,
            2 if at < out.len() => {
                out.remove(at);
            }
            3 if at < out.len() => {
                let b = out[at];
                out.insert(at, b);
            }
            4 if at < out.len() => out[at] = DICT[rng.below(DICT.len())],
            _ => out.insert(at, DICT[rng.below(DICT.len())]),
        }
    }
    out
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Inputs `cargo fuzz run` adds to the corpus directory are named by their SHA-1 and ignored by
/// git; only the committed, named seeds are replayed (thousands of local finds would make this
/// test slow on a machine that has fuzzed).
fn found_by_libfuzzer(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() == 40 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file() && !found_by_libfuzzer(p))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seeds", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

fn iterations() -> usize {
    std::env::var("BALLAST_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Runs one input, turning a panic into a message that says how to get the input back.
fn exec(target: &str, input: &[u8], what: &dyn Fn() -> String) {
    let run = std::panic::catch_unwind(|| harness::run(target, input));
    if run.is_err() {
        panic!(
            "{target}: the parser panicked on {} ({} bytes: {:?})",
            what(),
            input.len(),
            String::from_utf8_lossy(input)
        );
    }
}

/// Seeds, prefixes and mutants of one target; returns how many inputs ran.
fn replay(target: &str) -> usize {
    let iters = iterations();
    let mut runs = 0;
    for (path, seed) in seeds(target) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        exec(target, &seed, &|| format!("seed {name}"));
        runs += 1;
        let step = seed.len().div_ceil(MAX_PREFIXES).max(1);
        for len in (0..seed.len()).step_by(step) {
            exec(target, &seed[..len], &|| {
                format!("seed {name} cut to {len} bytes")
            });
            runs += 1;
        }
        // One PRNG stream per seed, from its name, so a failure is reproducible on its own.
        let mut rng = XorShift(
            name.bytes().fold(0x9E37_79B9_7F4A_7C15, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
            }) | 1,
        );
        for i in 0..iters {
            let input = mutate(&seed, &mut rng);
            exec(target, &input, &|| format!("mutant {i} of seed {name}"));
            runs += 1;
        }
    }
    eprintln!("fuzz_corpus: {target}: {runs} executions");
    runs
}

#[test]
fn config_toml_corpus() {
    replay("config_toml");
}

#[test]
fn keepalived_corpus() {
    replay("keepalived");
}

#[test]
fn nginx_corpus() {
    replay("nginx");
}

#[test]
fn ipvsadm_corpus() {
    replay("ipvsadm");
}

#[test]
fn vrrp_packet_corpus() {
    replay("vrrp_packet");
}

#[test]
fn proxy_protocol_corpus() {
    replay("proxy_protocol");
}

#[test]
fn admin_body_corpus() {
    replay("admin_body");
}

#[test]
fn http_head_corpus() {
    replay("http_head");
}

#[test]
fn every_target_has_a_corpus_and_a_test() {
    for target in harness::TARGETS {
        assert!(corpus_dir(target).is_dir(), "no fuzz/corpus/{target}");
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        assert!(source.is_file(), "no {}", source.display());
    }
}

#[test]
fn text_imports_report_includes_instead_of_reading_files() {
    use ballast::import::{import_str, Format, ImportError};
    for (format, text) in [
        (Format::Keepalived, "include /etc/passwd\n"),
        (Format::Nginx, "include /etc/passwd;\n"),
    ] {
        match import_str(format, text, "t.conf") {
            Err(ImportError::Invalid(problems)) => {
                assert!(problems[0].message.contains("not followed"), "{problems:?}");
            }
            other => panic!("{format:?}: {other:?}"),
        }
    }
}

/// The seeds of the two request targets get past parsing, so the fuzzers start from the edits
/// and rewrites, not only from the parsers' error paths.
#[test]
fn request_seeds_reach_the_edits_and_the_rewrite() {
    use ballast::admin::api::{
        parse_add_listener, parse_add_server, parse_edit_server, ListenerBodyError,
    };
    let seed = |target: &str, name: &str| {
        std::fs::read(corpus_dir(target).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let change = parse_edit_server(&seed("admin_body", "edit-weight-and-state.json"));
    assert!(change.is_ok_and(|c| c.weight == Some(0) && c.state.is_some()));
    assert!(parse_edit_server(&seed("admin_body", "edit-weight-out-of-range.json")).is_err());
    let server = parse_add_server(&seed("admin_body", "add-server-all-fields.json"));
    assert!(server.is_ok_and(|s| s.backup && !s.check && s.weight == 65535));
    let listener = parse_add_listener(&seed("admin_body", "add-listener-all-fields.json"));
    assert!(listener.is_ok_and(|l| l.name == "web" && l.backlog == 4096));
    let injected = parse_add_listener(&seed("admin_body", "add-listener-quote-injection.json"));
    assert!(
        matches!(&injected, Err(ListenerBodyError::Invalid(p)) if p[0].contains("not a valid name")),
        "{injected:?}"
    );

    use ballast::proxy::http::head::refused;
    let parse = |name: &str| {
        let bytes = seed("http_head", name);
        let mut lines = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut lines);
        assert!(
            matches!(req.parse(&bytes), Ok(httparse::Status::Complete(_))),
            "{name}"
        );
        let mut out = http::Request::builder()
            .method(req.method.unwrap_or_default())
            .uri(req.path.unwrap_or_default());
        if req.version == Some(0) {
            out = out.version(http::Version::HTTP_10);
        }
        for h in req.headers.iter() {
            out = out.header(h.name, h.value);
        }
        out.body(()).expect("a valid request")
    };
    for name in [
        "get-many-headers",
        "post-chunked",
        "upgrade-websocket",
        "absolute-form",
    ] {
        assert_eq!(refused(&parse(name)), None, "{name}");
    }
    for name in [
        "two-hosts",
        "http11-no-host",
        "connect",
        "post-te-gzip",
        "regression-userinfo-target",
        "regression-userinfo-host",
    ] {
        assert!(refused(&parse(name)).is_some(), "{name}");
    }
}
