//! Every fuzz target's own body (`fuzz/targets/`), run on every test run
//! over its committed seed corpus (`fuzz/corpus/<target>`) and over a fixed
//! number of seeded mutations of it: the parsers that take outside input
//! must refuse, never panic, and keep their properties. Long coverage-guided
//! runs are `bash fuzz/run.sh` (FUZZING.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/targets/authority_response.rs"]
mod authority_response;
#[path = "../../fuzz/targets/config.rs"]
mod config;
#[path = "../../fuzz/targets/credentials.rs"]
mod credentials;
#[path = "../../fuzz/targets/graph_path.rs"]
mod graph_path;
#[path = "../../fuzz/targets/host.rs"]
mod host;
#[path = "../../fuzz/targets/query.rs"]
mod query;

use std::path::Path;

/// The committed seeds of `target`, by file name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "{} holds no seed", dir.display());
    seeds
}

/// xorshift64*: the same mutations on every run and every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes a parser treats specially: separators, quotes, escapes, bounds.
const INTERESTING: &[&[u8]] = &[
    b"%",
    b"%2F",
    b"%00",
    b"&",
    b"=",
    b"/",
    b"\\",
    b"\"",
    b"'",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\n",
    b"\r\n",
    b"\0",
    b":",
    b"@",
    b"#",
    b"?",
    b"..",
    b"%2e",
    b"%5C",
    b"%40",
    b"('",
    b"')",
    b"(",
    b")",
    b"\xff",
    b"\xc3\xa9",
    b"-1",
    b"0",
    b"18446744073709551616",
    b"9999999999999999999d",
];

/// One libFuzzer-style mutation of `input` (another seed may be spliced in).
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(16)).min(out.len());
                out.drain(start..end);
            }
            3 => {
                let at = rng.below(out.len() + 1);
                let token = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, token.iter().copied());
            }
            4 if !out.is_empty() => {
                out.truncate(rng.below(out.len()));
            }
            5 if !other.is_empty() => {
                let at = rng.below(out.len() + 1);
                let from = rng.below(other.len());
                let to = (from + 1 + rng.below(64)).min(other.len());
                out.splice(at..at, other[from..to].iter().copied());
            }
            _ if !out.is_empty() => {
                // Repeat a slice: lengths and nesting past their bounds.
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(32)).min(out.len());
                let slice = out[start..end].to_vec();
                for _ in 0..=rng.below(8) {
                    out.splice(end..end, slice.iter().copied());
                }
            }
            _ => out.push(rng.next() as u8),
        }
    }
    out
}

/// Runs `run` on every seed of `target`, then on `mutations` seeded
/// mutations; a panic names the input that caused it.
fn replay(target: &str, mutations: usize, run: fn(&[u8])) {
    let seeds = corpus(target);
    for (name, seed) in &seeds {
        check(target, name, seed, run);
    }
    let mut rng = Rng(0x5eed_0000_0000_0001 ^ target.len() as u64);
    for i in 0..mutations {
        let (_, seed) = &seeds[i % seeds.len()];
        let (_, other) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed, other);
        check(target, &format!("mutation {i}"), &input, run);
    }
}

fn check(target: &str, name: &str, input: &[u8], run: fn(&[u8])) {
    if std::panic::catch_unwind(|| run(input)).is_err() {
        panic!(
            "fuzz target {target} panicked on {name}: {:?} (add it to fuzz/corpus/{target} once fixed)",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn query_corpus() {
    replay("query", 20_000, query::run);
}

#[test]
fn graph_path_corpus() {
    replay("graph_path", 20_000, graph_path::run);
}

#[test]
fn host_corpus() {
    replay("host", 20_000, host::run);
}

#[test]
fn config_corpus() {
    replay("config", 3_000, config::run);
}

#[test]
fn authority_response_corpus() {
    replay("authority_response", 20_000, authority_response::run);
}

#[test]
fn credentials_corpus() {
    replay("credentials", 300, credentials::run);
}

#[test]
fn mutations_change_the_input() {
    let mut rng = Rng(7);
    let seed = b"tenant=contoso.onmicrosoft.com&resource=https://graph.microsoft.com";
    let changed = (0..100)
        .filter(|_| mutate(&mut rng, seed, seed) != seed)
        .count();
    assert!(changed >= 90, "{changed} of 100 mutations changed the seed");
}
