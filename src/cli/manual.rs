//! `tokenbroker man`: the clap pages, and in tokenbroker(1) the reference
//! an operator looks for, generated from what the code itself uses so it
//! cannot drift: the bounded keys with their defaults (the validation's own
//! tables applied to a default configuration), the example configuration
//! (which the tests parse), the routes, every metric (the registry's own
//! names and help), files and exit codes.

use super::args::Cli;
use super::CliError;
use crate::config::{Config, ConfigDuration, CONFIG_ENV, DEFAULT_CONFIG_PATH};
use crate::route::Route;
use clap::CommandFactory;
use std::fmt::Write as _;
use std::path::Path;

/// The example configuration, every key with its default.
const EXAMPLE: &str = include_str!("../../config/tokenbroker.example.toml");

/// A configuration with every default: the smallest file that parses.
fn defaults() -> Result<Config, CliError> {
    let text = "[app]\nclient_id = \"00000000-0000-0000-0000-000000000000\"\n\
                certificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n";
    Config::parse(text, Path::new(DEFAULT_CONFIG_PATH)).map_err(CliError::Config)
}

/// The clap pages, version set to the release (not the commit).
fn command() -> clap::Command {
    Cli::command().version(crate::VERSION)
}

/// tokenbroker(1): the clap page and the reference sections.
pub(super) fn main_page() -> Result<Vec<u8>, CliError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command())
        .render(&mut page)
        .map_err(|e| CliError::Other(format!("rendering the manual page: {e}")))?;
    page.extend_from_slice(reference()?.as_bytes());
    Ok(page)
}

/// Every page into `dir`: one per command, tokenbroker.1 with the reference.
pub(super) fn write_pages(dir: &Path) -> Result<(), CliError> {
    let failed = |e: std::io::Error| {
        CliError::Other(format!(
            "writing the manual pages to {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir)
        .and_then(|()| clap_mangen::generate_to(command(), dir))
        .map_err(failed)?;
    std::fs::write(dir.join("tokenbroker.1"), main_page()?).map_err(failed)
}

/// Text for roff: a leading `.` or `'` would be a request, `\` an escape,
/// `-` a hyphen rather than the minus a command line needs.
fn roff(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\e"),
            '-' => escaped.push_str("\\-"),
            c if c.is_ascii() => escaped.push(c),
            // groff reads ASCII; others by their code point.
            c => {
                let _ = write!(escaped, "\\[u{:04X}]", u32::from(c));
            }
        }
    }
    match escaped.chars().next() {
        Some('.' | '\'') => format!("\\&{escaped}"),
        _ => escaped,
    }
}

/// The reference sections, in roff.
fn reference() -> Result<String, CliError> {
    let config = defaults()?;
    let mut page = String::new();
    let _ = writeln!(page, ".SH \"CONFIGURATION\"");
    let mut text = String::new();
    let _ = writeln!(
        text,
        ".PP\nOne TOML file: \\fB--config\\fR FILE, else \\fB${CONFIG_ENV}\\fR, else \\fB{}\\fR. \
         Unknown keys are errors; relative paths are relative to the file; durations are \
         written like 30s, 5m, 1h 30m. \\fBtokenbroker check\\fR explains what is wrong, naming \
         the line and the key.",
        roff(DEFAULT_CONFIG_PATH)
    );
    let _ = writeln!(text, ".SS \"Bounded keys (default; allowed range)\"");
    for (key, value, low, high) in crate::config::validate::number_bounds(&config) {
        let _ = writeln!(text, ".TP\n\\fB{}\\fR\n{value}; {low} to {high}", roff(key));
    }
    for (key, value, low, high) in crate::config::validate::duration_bounds(&config) {
        let _ = writeln!(
            text,
            ".TP\n\\fB{}\\fR\n{value}; {} to {}",
            roff(key),
            ConfigDuration(low),
            ConfigDuration(high)
        );
    }
    let _ = writeln!(text, ".SS \"Every key, with its default\"\n.nf");
    for line in EXAMPLE.lines() {
        let _ = writeln!(text, "{}", roff(line));
    }
    let _ = writeln!(text, ".fi");
    page.push_str(&text);

    let _ = writeln!(page, ".SH \"HTTP API\"");
    for route in Route::ALL {
        if let Some(summary) = route.summary() {
            let _ = writeln!(
                page,
                ".TP\n\\fB{}\\fR\n{}",
                roff(route.label()),
                roff(summary)
            );
        }
    }

    let _ = writeln!(
        page,
        ".SH METRICS\n.PP\nOn /metrics (or server.metrics_listen), in the Prometheus text format:"
    );
    let metrics = crate::metrics::Metrics::new(&config);
    for metric in metrics.describe() {
        let labels = match metric.labels.is_empty() {
            true => String::new(),
            false => format!("{{{}}}", metric.labels.join(",")),
        };
        let _ = writeln!(
            page,
            ".TP\n\\fB{}\\fR{}\n{}",
            roff(&metric.name),
            roff(&labels),
            roff(&metric.help)
        );
    }

    let _ = writeln!(
        page,
        ".SH FILES\n.TP\n\\fB{}\\fR\nThe configuration (when neither \\fB--config\\fR nor \\fB${CONFIG_ENV}\\fR names one).\n\
         .TP\n\\fB/run/tokenbroker/\\fR\nThe callers' and the admin sockets (server.unix_socket, server.admin_socket).\n\
         .TP\n\\fB/var/lib/tokenbroker/\\fR\nThe state file (cache.state_file): a restart serves every cached tenant from it.",
        roff(DEFAULT_CONFIG_PATH)
    );
    let _ = writeln!(page, ".SH \"EXIT STATUS\"");
    for (code, meaning) in super::EXIT_CODES {
        let _ = writeln!(page, ".TP\n\\fB{code}\\fR\n{}", roff(meaning));
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_lists_the_codes_sources() {
        let text = reference().unwrap();
        for expected in [
            ".SH \"CONFIGURATION\"",
            "\\fBserver.max_connections\\fR\n1024; 1 to 65536",
            "\\fBcache.min_remaining\\fR\n5m; 0s to 59m",
            "[server]",
            ".SH \"HTTP API\"",
            "\\fB/v1/token\\fR",
            "\\fB/msi/token\\fR",
            ".SH METRICS",
            "\\fBtokenbroker_http_requests_total\\fR{route,status}",
            "\\fBtokenbroker_build_info\\fR{version,commit}",
            "\\fBprocess_resident_memory_bytes\\fR",
            ".SH \"EXIT STATUS\"",
            ".SH FILES",
        ] {
            assert!(text.contains(expected), "{expected}");
        }
        // No line starts a roff request by accident.
        for line in text.lines() {
            assert!(
                !line.starts_with('\'')
                    && (!line.starts_with('.')
                        || line.starts_with(".SH")
                        || line.starts_with(".SS")
                        || line.starts_with(".TP")
                        || line.starts_with(".PP")
                        || line.starts_with(".nf")
                        || line.starts_with(".fi")),
                "{line}"
            );
        }
    }

    #[test]
    fn roff_escapes_what_roff_would_read_as_requests() {
        assert_eq!(roff(".hidden"), "\\&.hidden");
        assert_eq!(roff("--config"), "\\-\\-config");
        assert_eq!(roff("a\\b"), "a\\eb");
        assert_eq!(roff("a…b"), "a\\[u2026]b");
    }
}
