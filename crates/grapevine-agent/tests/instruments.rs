//! The simulator as an instrument: `grapevine sim sweep`, `tune` and `report`, run as a user
//! runs them.

use serde_json::Value;
use std::process::Command;

/// `grapevine ARGS...`, which must succeed; its standard output.
fn grapevine(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_grapevine"))
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "grapevine {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&grapevine(args)).expect("json")
}

#[test]
fn a_sweep_writes_csv_and_svg_deterministically_and_each_point_is_its_own_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 path");
    let args = [
        "sim",
        "sweep",
        "state",
        "--param",
        "fanout",
        "--values",
        "1,2,4",
        "--seeds",
        "2",
        "--metric",
        "seconds_to_all",
        "--out",
        out,
        "--json",
        "--",
        "--nodes",
        "150",
    ];
    let summary = json(&args);
    let csv_path = summary["csv"].as_str().expect("csv");
    let csv = std::fs::read_to_string(csv_path).expect("csv written");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 1 + 3 * 2, "{csv}");
    assert!(rows[0].starts_with("swept_fanout,seed,"), "{}", rows[0]);
    let svg = std::fs::read_to_string(summary["svg"].as_str().expect("svg")).expect("svg");
    assert!(svg.contains("<svg") && svg.contains("seconds_to_all") && svg.contains("made by"));

    // The same sweep again: the same CSV.
    json(&args);
    assert_eq!(std::fs::read_to_string(csv_path).expect("csv"), csv);

    // The row for fanout 2, seed 2 is what that command prints alone.
    let header: Vec<&str> = rows[0].split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "seconds_to_all")
        .expect("column");
    let row: Vec<&str> = rows[4].split(',').collect();
    assert_eq!((row[0], row[1]), ("2", "2"));
    let alone = json(&[
        "sim",
        "state",
        "--fanout",
        "2",
        "--seed",
        "2",
        "--nodes",
        "150",
        "--json",
        "--no-wall-clock",
    ]);
    assert_eq!(
        row[col].parse::<f64>().ok(),
        alone["seconds_to_all"].as_f64()
    );

    // Faster with more partners, in the summary's means.
    let means: Vec<f64> = summary["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| {
            p["metrics"]["seconds_to_all"]["mean"]
                .as_f64()
                .expect("mean")
        })
        .collect();
    assert!(means[0] > means[1] && means[1] > means[2], "{means:?}");
}

#[test]
fn a_sweep_names_a_wrong_parameter_or_metric() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 path");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_grapevine"))
            .args(args)
            .output()
            .expect("runs")
    };
    let o = run(&[
        "sim", "sweep", "merkle", "--param", "fanout", "--values", "1", "--out", out,
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--fanout"));
    let o = run(&[
        "sim", "sweep", "spread", "--param", "nodes", "--values", "100", "--metric", "nonsense",
        "--out", out, "--", "--runs", "2",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nonsense"));
}

#[test]
fn tune_for_2000_nodes_at_1_percent_loss_is_repeatable_and_agrees_with_sim_state() {
    let args = ["sim", "tune", "--nodes", "2000", "--loss", "0.01"];
    let a = grapevine(&args);
    let b = grapevine(&args);
    assert_eq!(a, b, "the same seed must print the same plan");
    assert!(
        a.contains("every node") && a.contains("first suspicion"),
        "{a}"
    );

    let plan = json(&["sim", "tune", "--nodes", "2000", "--loss", "0.01", "--json"]);
    let predicted = plan["convergence"]["all"]["seconds"]["median"]
        .as_f64()
        .expect("median");
    // What `sim state` measures for the same settings, on seeds the plan did not use.
    let mut measured: Vec<f64> = (101..111)
        .map(|seed| {
            json(&[
                "sim",
                "state",
                "--nodes",
                "2000",
                "--loss",
                "0.01",
                "--seed",
                &seed.to_string(),
                "--json",
                "--no-wall-clock",
            ])["seconds_to_all"]
                .as_f64()
                .expect("converged")
        })
        .collect();
    measured.sort_by(f64::total_cmp);
    let median = (measured[4] + measured[5]) / 2.0;
    let off = (predicted - median).abs() / median;
    println!(
        "tune predicts {predicted} s, sim state measures {median} s (median of 10): {:.1} % apart",
        off * 100.0
    );
    assert!(off <= 0.2, "predicted {predicted} s, measured {median} s");
    assert_eq!(plan["detection"]["false_positives"].as_u64(), Some(0));
}

#[test]
fn tune_suggests_a_setting_that_meets_the_target_when_run() {
    let plan = json(&[
        "sim", "tune", "--nodes", "300", "--loss", "0.01", "--seeds", "4", "--target", "1500ms",
        "--json",
    ]);
    let s = &plan["suggestion"];
    assert_eq!(s["meets_target"].as_bool(), Some(true), "{s}");
    let p99 = s["confirmed"]["all"]["seconds"]["p99"]
        .as_f64()
        .expect("p99");
    assert!(p99 <= 1.5, "{p99}");
    // The setting is one of the fanouts searched.
    let chosen = s["confirmed"]["fanout"].as_u64().expect("fanout");
    let cands = s["candidates"].as_array().expect("candidates");
    assert!(
        cands.iter().any(|c| c["fanout"].as_u64() == Some(chosen)),
        "{s}"
    );
}

#[test]
fn a_quick_report_produces_every_plot_and_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 path");
    let printed = grapevine(&["sim", "report", "--quick", "--out", out]);
    let md = std::fs::read_to_string(dir.path().join("results.md")).expect("results.md");
    let plots: Vec<String> = std::fs::read_dir(dir.path().join("plots"))
        .expect("plots")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for name in [
        "join",
        "load",
        "detection-loss",
        "mistakes-loss",
        "swim-formula",
        "lifeguard",
        "detectors",
        "rounds-model",
        "rounds-real",
        "s-curve",
        "rumor",
        "bandwidth-budget",
        "merkle",
        "push-sum",
        "push-sum-leave",
    ] {
        let file = format!("{name}.svg");
        assert!(plots.contains(&file), "{file} missing from {plots:?}");
        assert!(
            md.contains(&format!("(plots/{file})")),
            "results.md does not show {file}"
        );
        let svg = std::fs::read_to_string(dir.path().join("plots").join(&file)).expect("svg");
        assert!(
            svg.contains("made by: grapevine sim"),
            "{file} names no command"
        );
        // Something was drawn: a data marker or a line.
        assert!(
            svg.contains("<circle") || svg.contains("<polyline"),
            "{file} is empty"
        );
    }
    for table in [
        "## Acceptance checks",
        "| N | join converged",
        "| N | messages | datagrams |",
        "| selection | seed |",
        "| k | loss | formula |",
        "| slow share |",
        "| detector |",
        "| N | push (mean / p99) |",
        "| variant | k | residue |",
        "| N | rounds to converge |",
        "| budget (B/s) |",
        "| differing keys |",
        "| N | rounds to 10⁻³ |",
    ] {
        assert!(md.contains(table), "results.md lacks {table:?}");
    }
    // No table cell is empty for want of a run.
    assert!(!md.contains("| – |"), "a figure is missing:\n{md}");
    assert!(printed.contains("holds"), "{printed}");
    // The same command makes the same document.
    let again = tempfile::tempdir().expect("tempdir");
    grapevine(&[
        "sim",
        "report",
        "--quick",
        "--out",
        again.path().to_str().expect("path"),
    ]);
    assert_eq!(
        std::fs::read_to_string(again.path().join("results.md")).expect("md"),
        md
    );
}

#[test]
fn a_sweep_without_metric_plots_a_field_that_varies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8 path");
    let summary = json(&[
        "sim",
        "sweep",
        "spread",
        "--param",
        "mode",
        "--values",
        "push,push-pull",
        "--seeds",
        "1",
        "--out",
        out,
        "--json",
        "--",
        "--nodes",
        "2000",
        "--runs",
        "3",
    ]);
    let svg = std::fs::read_to_string(summary["svg"].as_str().expect("svg")).expect("svg");
    // `nodes` and `fanout` echo fixed options; the rounds differ between the modes.
    assert!(svg.contains("rounds_mean against mode"), "{svg:.400}");
}
