//! Puts the git commit this binary is built from in `TOKENGATE_COMMIT` (for
//! `tokengate_build_info`). A `TOKENGATE_COMMIT` set by the builder wins; without git (a source
//! tarball, a clone without `.git`) the metric says "unknown", also when the source sits
//! inside some other project's repository (a vendored copy), whose commit is not ours.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=TOKENGATE_COMMIT");
    if std::env::var_os("TOKENGATE_COMMIT").is_some() {
        return;
    }
    let ours =
        std::env::var_os("CARGO_MANIFEST_DIR").and_then(|dir| std::fs::canonicalize(dir).ok());
    let top =
        git(&["rev-parse", "--show-toplevel"]).and_then(|dir| std::fs::canonicalize(dir).ok());
    if ours.is_none() || ours != top {
        return;
    }
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=TOKENGATE_COMMIT={commit}");
    // Rebuilt when HEAD moves: a checkout changes HEAD, a commit changes the branch's ref
    // (or packed-refs). Paths that do not exist are not named: cargo would rerun every build.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
