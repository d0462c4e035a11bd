//! Records the commit the binary is built from (`tokenbroker --version`,
//! `tokenbroker_build_info`): `TOKENBROKER_COMMIT` when the builder sets it
//! (a package built from a tarball), else `git rev-parse`, else "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TOKENBROKER_COMMIT");
    let commit = std::env::var("TOKENBROKER_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=TOKENBROKER_COMMIT={commit}");
}

fn git_commit() -> Option<String> {
    let git_dir = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let git_dir = String::from_utf8(git_dir.stdout).ok()?;
    let git_dir = Path::new(git_dir.trim()).to_owned();
    // Branch refs live in the common directory (a worktree has its own HEAD).
    let common = Command::new("git")
        .args(["rev-parse", "--git-common-dir"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|d| Path::new(d.trim()).to_owned())
        .unwrap_or_else(|| git_dir.clone());
    // A new commit moves the branch HEAD points at, or HEAD itself. Only
    // files that exist are watched: cargo reruns for a missing one every time.
    let mut watched = vec![git_dir.join("HEAD"), common.join("packed-refs")];
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            watched.push(common.join(reference));
        }
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    // Only a hash goes into the binary.
    (!commit.is_empty() && commit.bytes().all(|b| b.is_ascii_hexdigit())).then_some(commit)
}
