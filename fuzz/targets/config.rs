//! The configuration loader: TOML parsing, every value's check, the rules
//! that span keys. It must refuse, never panic.

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = tokenbroker::config::Config::parse(
        &text,
        std::path::Path::new("/etc/tokenbroker/fuzz.toml"),
    );
}
