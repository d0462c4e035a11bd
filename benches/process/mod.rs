//! A real `tokenbroker serve` process for the benches that measure one
//! (`scale`, `gateway`), and its memory as `/proc` reports it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The number after `name` on the command line (`--tenants 30000`), else
/// `default`.
pub fn number_arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VmRSS and VmHWM of `pid`, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A running `tokenbroker serve`, its address once it listens.
pub struct Broker {
    child: std::process::Child,
    /// `http://ADDRESS` of its TCP listener.
    pub base: String,
}

impl Broker {
    /// Starts the broker on `config` with `RUST_LOG=filter` (under
    /// `BENCH_BROKER_WRAPPER` when set, `BENCH_BROKER_BIN` when set) and waits until it serves; its log
    /// lines are read (and dropped) for as long as it runs.
    pub fn start(config: &std::path::Path, filter: &str) -> Broker {
        // BENCH_BROKER_WRAPPER="valgrind --tool=callgrind …" runs the broker
        // under that command (benches/callgrind.sh counts instructions so).
        let wrapper = std::env::var("BENCH_BROKER_WRAPPER").unwrap_or_default();
        // BENCH_BROKER_BIN=target/dist/tokenbroker: the binary as shipped
        // (`cargo build --profile dist`), not the bench profile's.
        let binary = std::env::var_os("BENCH_BROKER_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_tokenbroker").into());
        let mut words = wrapper.split_whitespace();
        let mut child = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let mut child = child
            .args(["serve", "--log-format", "json", "--config"])
            .arg(config)
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tokenbroker");
        let stderr = child.stderr.take().expect("stderr");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut address = None;
            let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
            for line in lines.by_ref() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["message"] == "listening" && v["listener"] == "tcp" {
                    address = v["address"].as_str().map(str::to_owned);
                }
                if v["message"] == "serving" {
                    if let Some(address) = address.take() {
                        let _ = addr_tx.send(address);
                        break;
                    }
                }
            }
            // Keep the pipe drained (access lines) without parsing them.
            for _ in lines {}
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("broker serving");
        Broker {
            child,
            base: format!("http://{addr}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and waits for the exit (the state file is written then).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
