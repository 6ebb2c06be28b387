//! Every program in `examples/` runs to completion (each starts its own cluster on loopback
//! and checks what it shows). A whole-package `cargo test` builds the examples next to the
//! test binaries; `cargo test --test examples` alone does not, so the test builds any that
//! are missing.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXAMPLES: [&str; 5] = [
    "schema_agreement",
    "discovery_client",
    "config_watcher",
    "failure_detector",
    "aggregator",
];

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-HASH → target/<profile>/examples/NAME
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    dir.join("examples").join(name)
}

/// Builds the example with the test's own profile if it is not there.
fn build(name: &str, path: &std::path::Path) {
    if path.exists() {
        return;
    }
    let release = path
        .parent()
        .and_then(|d| d.parent())
        .and_then(|d| d.file_name())
        .is_some_and(|p| p == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "grapevine", "--example", name]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building the example {name} failed");
}

fn run(name: &str) {
    let path = example(name);
    build(name, &path);
    assert!(path.exists(), "{} is not built", path.display());
    let mut child = Command::new(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let t0 = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().expect("wait") {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("{name} ran for over 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("== {name} ({:.1} s)\n{stdout}", t0.elapsed().as_secs_f64());
}

#[test]
fn every_example_runs() {
    for name in EXAMPLES {
        run(name);
    }
    // And none is left out of this list.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .expect("examples/")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".rs")
                .map(str::to_string)
        })
        .collect();
    found.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
}
