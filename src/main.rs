//! The `tokenbroker` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    tokenbroker::cli::run()
}
