//! The `grapevine` binary, run as a user runs it.

use std::process::Command;

fn sim(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_grapevine"))
        .arg("sim")
        .arg("swim")
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn same_command_and_seed_print_identical_json() {
    let args = [
        "--nodes",
        "60",
        "--periods",
        "50",
        "--crash",
        "2",
        "--loss",
        "0.02",
        "--seed",
        "9",
        "--json",
        "--no-wall-clock",
    ];
    let a = sim(&args);
    let b = sim(&args);
    assert_eq!(a, b);
    let v: serde_json::Value = serde_json::from_str(&a).expect("json");
    for field in [
        "nodes",
        "seed",
        "join_converged_period",
        "detect_first_mean_periods",
        "detect_all_max_periods",
        "false_positives",
        "false_suspicions",
        "healed_converged_period",
        "msgs_per_node_per_period",
        "bytes_per_node_per_period",
    ] {
        assert!(v.get(field).is_some(), "missing {field}");
    }
    assert!(
        v.get("wall_seconds").is_none(),
        "--no-wall-clock leaves it out"
    );
    // Without the flag, wall-clock time is reported.
    let timed: serde_json::Value =
        serde_json::from_str(&sim(&["--nodes", "20", "--periods", "10", "--json"])).expect("json");
    assert!(timed.get("wall_seconds").is_some());
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_grapevine"))
        .args(["sim", "swim", "--nodes", "10", "--loss", "2"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--loss"));
    let out = Command::new(env!("CARGO_BIN_EXE_grapevine"))
        .args(["sim", "swim", "--profile", "moon"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("moon"));
}
