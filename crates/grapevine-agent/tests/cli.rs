//! The `grapevine` binary, run as a user runs it.

use std::process::Command;

fn sim(args: &[&str]) -> String {
    scenario("swim", args)
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

/// `grapevine sim SCENARIO ARGS...`, which must succeed.
fn scenario(name: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_grapevine"))
        .arg("sim")
        .arg(name)
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
fn every_state_scenario_is_deterministic_and_reports_its_fields() {
    let cases: [(&str, &[&str], &[&str]); 5] = [
        (
            "spread",
            &["--nodes", "5000", "--mode", "push-pull", "--runs", "5"],
            &["rounds_mean", "rounds_p99", "rounds_max", "msgs_per_node"],
        ),
        (
            "rumor",
            &[
                "--variant",
                "push-feedback-counter",
                "--k",
                "2",
                "--runs",
                "20",
            ],
            &["residue", "traffic", "t_ave", "t_last"],
        ),
        (
            "merkle",
            &["--keys", "20000", "--diff", "10"],
            &["bytes", "round_trips", "full_exchange_bytes"],
        ),
        (
            "state",
            &["--nodes", "60", "--writes", "3"],
            &[
                "rounds_to_converge",
                "bytes_per_node_per_round",
                "lost_writes",
            ],
        ),
        (
            "aggregate",
            &["--nodes", "60", "--rounds", "30", "--leave-at", "15"],
            &["rounds_to_epsilon", "rounds_to_recover", "errors", "left"],
        ),
    ];
    for (name, args, fields) in cases {
        let mut args = args.to_vec();
        args.extend(["--json", "--no-wall-clock", "--seed", "3"]);
        let a = scenario(name, &args);
        assert_eq!(a, scenario(name, &args), "{name}: same seed, same output");
        let v: serde_json::Value = serde_json::from_str(&a).expect("json");
        for f in fields {
            assert!(v.get(*f).is_some(), "{name}: missing {f}");
        }
    }
}

#[test]
fn bad_scenario_arguments_are_refused_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_grapevine"))
        .args(["sim", "rumor", "--variant", "shout-loudly-always"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown variant"));
}
