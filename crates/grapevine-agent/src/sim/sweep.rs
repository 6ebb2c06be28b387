//! `grapevine sim sweep`: one scenario over a range of one parameter, several seeds a point.
//! Each run is the scenario's own command line with `--PARAM=VALUE --seed=S` added, so any
//! option of any scenario can be swept, and a sweep's point is reproduced by running that
//! command alone. Writes every run to CSV and the means with their min–max spread to SVG.

use super::plot::{self, Axis, Chart, Kind, Point, Series};
use super::Scenario;
use anyhow::{anyhow, Context, Result};
use clap::Parser;
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;

/// Options of `grapevine sim sweep`.
#[derive(clap::Args, Clone)]
pub struct SweepArgs {
    /// The scenario: swim, spread, rumor, merkle, state or aggregate.
    pub scenario: String,
    /// The option to vary, as the scenario spells it without dashes: nodes, fanout, interval,
    /// loss, mode, k, profile, detector, no-lifeguard...
    #[arg(long)]
    pub param: String,
    /// The values it takes, comma-separated (e.g. 100,1000,10000 or push,pull,push-pull).
    #[arg(long, value_delimiter = ',', required = true)]
    pub values: Vec<String>,
    /// Seeds per point (the run's seeds are `--seed`, `--seed`+1, ...).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Report fields to plot, by name (nested fields as `a.b`); repeat or separate by commas
    /// [default: every numeric field in the CSV; the first that varies between runs plotted].
    #[arg(long, value_delimiter = ',')]
    pub metric: Vec<String>,
    /// Directory for the CSV and SVG files.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// File name stem [default: SCENARIO-PARAM].
    #[arg(long)]
    pub name: Option<String>,
    /// Logarithmic horizontal axis [default: when the values span a factor of 100].
    #[arg(long)]
    pub log_x: bool,
    /// Logarithmic vertical axis.
    #[arg(long)]
    pub log_y: bool,
    /// Simultaneous runs [default: the machine's cores].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Further options for every run of the scenario, after `--`.
    #[arg(last = true)]
    pub rest: Vec<String>,
}

/// A scenario command line parsed on its own, as `grapevine sim SCENARIO ...` would be.
#[derive(Parser)]
#[command(name = "grapevine sim", no_binary_name = true)]
struct ScenarioLine {
    #[command(subcommand)]
    scenario: Scenario,
}

/// One point of a sweep: the value, and each metric over the seeds.
#[derive(Clone, Debug, Serialize)]
pub struct PointSummary {
    /// The parameter's value.
    pub value: String,
    /// Per metric: mean, min, max and median over the seeds (metrics a run lacked are left
    /// out of its point).
    pub metrics: serde_json::Map<String, Value>,
}

/// What a sweep prints with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct SweepSummary {
    /// The scenario.
    pub scenario: String,
    /// The parameter.
    pub param: String,
    /// Seeds per point.
    pub seeds: u64,
    /// The CSV written.
    pub csv: String,
    /// The SVG written.
    pub svg: String,
    /// The points in the order given.
    pub points: Vec<PointSummary>,
}

/// The command line of one run of a sweep.
pub fn run_line(
    scenario: &str,
    param: &str,
    value: &str,
    seed: u64,
    rest: &[String],
) -> Vec<String> {
    let mut line = vec![
        scenario.to_string(),
        format!("--{param}={value}"),
        format!("--seed={seed}"),
        "--no-wall-clock".to_string(),
    ];
    line.extend(rest.iter().cloned());
    line
}

/// Parses one run's command line, with clap's message if it is wrong.
pub fn parse_line(line: &[String]) -> Result<Scenario> {
    ScenarioLine::try_parse_from(line)
        .map(|l| l.scenario)
        .map_err(|e| anyhow!("`grapevine sim {}`: {}", line.join(" "), e.render()))
}

/// The numeric leaves of a report, with dotted paths; arrays are left out (per-round series
/// are not one number). Booleans count as 0 or 1.
pub fn numeric_fields(v: &Value) -> Vec<(String, f64)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, f64)>) {
        match v {
            Value::Number(n) => {
                if let Some(f) = n.as_f64() {
                    out.push((prefix.to_string(), f));
                }
            }
            Value::Bool(b) => out.push((prefix.to_string(), f64::from(u8::from(*b)))),
            Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// Runs `lines` on `jobs` threads, showing progress, and returns the reports in order.
pub fn run_all(lines: &[Vec<String>], jobs: Option<usize>, what: &str) -> Result<Vec<Value>> {
    run_all_typed(lines, jobs, what)?
        .iter()
        .map(super::Report::to_json)
        .collect()
}

/// Runs every command line, in parallel, and returns their typed reports in order.
pub fn run_all_typed(
    lines: &[Vec<String>],
    jobs: Option<usize>,
    what: &str,
) -> Result<Vec<super::Report>> {
    let scenarios: Vec<Scenario> = lines.iter().map(|l| parse_line(l)).collect::<Result<_>>()?;
    let bar = super::progress_bar(scenarios.len() as u64, what);
    let runs: Vec<(usize, Scenario)> = scenarios.into_iter().enumerate().collect();
    let results = grapevine_sim::par_map(
        &runs,
        super::jobs(jobs),
        |(i, s)| {
            s.clone()
                .run()
                .with_context(|| format!("`grapevine sim {}`", lines[*i].join(" ")))
        },
        &|| bar.inc(1),
    );
    bar.finish_and_clear();
    results.into_iter().collect()
}

/// Mean, min, max and median of some numbers.
pub fn stats(v: &[f64]) -> Option<(f64, f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    let median = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    Some((mean, s[0], s[s.len() - 1], median))
}

/// A metric's unit, guessed from the naming conventions of the scenarios' reports.
pub fn unit_of(metric: &str) -> &'static str {
    let m = metric.rsplit('.').next().unwrap_or(metric);
    if m.contains("seconds") || m.starts_with("seconds_") {
        " (s)"
    } else if m.contains("bytes") {
        " (bytes)"
    } else if m.contains("period") {
        " (periods)"
    } else if m.contains("round") || m == "t_ave" || m == "t_last" || m == "cycles" {
        " (rounds)"
    } else {
        ""
    }
}

/// Runs the sweep.
pub fn run(a: &SweepArgs) -> Result<()> {
    if a.seeds == 0 {
        return Err(anyhow!("--seeds must be at least 1"));
    }
    let mut lines = Vec::new();
    for v in &a.values {
        for s in a.seed..a.seed + a.seeds {
            lines.push(run_line(&a.scenario, &a.param, v, s, &a.rest));
        }
    }
    let what = format!("sweep {} over {}", a.scenario, a.param);
    let reports = run_all(&lines, a.jobs, &what)?;
    let fields: Vec<Vec<(String, f64)>> = reports.iter().map(numeric_fields).collect();

    // Columns: every numeric field any run reported, in first-seen order.
    let mut columns: Vec<String> = Vec::new();
    for f in fields.iter().flatten() {
        if !columns.contains(&f.0) {
            columns.push(f.0.clone());
        }
    }
    let metrics: Vec<String> = if a.metric.is_empty() {
        // The first field that is not the parameter or the seed and that changes between
        // runs: an echo of a fixed option (nodes, say) says nothing.
        let value_of =
            |f: &Vec<(String, f64)>, c: &str| f.iter().find(|(k, _)| k == c).map(|(_, v)| *v);
        columns
            .iter()
            .filter(|c| c.as_str() != a.param.replace('-', "_") && c.as_str() != "seed")
            .find(|c| {
                let first = fields.first().and_then(|f| value_of(f, c));
                fields.iter().any(|f| value_of(f, c) != first)
            })
            .or_else(|| columns.first())
            .cloned()
            .into_iter()
            .collect()
    } else {
        for m in &a.metric {
            if !columns.contains(m) {
                return Err(anyhow!(
                    "the {} report has no numeric field {m:?}; it has: {}",
                    a.scenario,
                    columns.join(", ")
                ));
            }
        }
        a.metric.clone()
    };

    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let stem = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", a.scenario, a.param));
    let csv_path = a.out.join(format!("{stem}.csv"));
    let svg_path = a.out.join(format!("{stem}.svg"));
    let mut csv = format!(
        "swept_{},seed,{}\n",
        a.param.replace('-', "_"),
        columns.join(",")
    );
    for (i, f) in fields.iter().enumerate() {
        let value = &a.values[i / a.seeds as usize];
        let seed = a.seed + (i as u64 % a.seeds);
        let cells: Vec<String> = columns
            .iter()
            .map(|c| {
                f.iter()
                    .find(|(k, _)| k == c)
                    .map_or(String::new(), |(_, v)| v.to_string())
            })
            .collect();
        csv += &format!("{},{seed},{}\n", csv_field(value), cells.join(","));
    }
    std::fs::write(&csv_path, csv).with_context(|| format!("writing {}", csv_path.display()))?;

    // Per point and metric: the spread over seeds.
    let mut points = Vec::new();
    for (j, value) in a.values.iter().enumerate() {
        let runs = &fields[j * a.seeds as usize..(j + 1) * a.seeds as usize];
        let mut m = serde_json::Map::new();
        for metric in &columns {
            let vals: Vec<f64> = runs
                .iter()
                .filter_map(|f| f.iter().find(|(k, _)| k == metric).map(|(_, v)| *v))
                .collect();
            if let Some((mean, min, max, median)) = stats(&vals) {
                m.insert(
                    metric.clone(),
                    serde_json::json!({"mean": mean, "min": min, "max": max, "median": median, "runs": vals.len()}),
                );
            }
        }
        points.push(PointSummary {
            value: value.clone(),
            metrics: m,
        });
    }

    let numeric: Option<Vec<f64>> = a.values.iter().map(|v| v.parse::<f64>().ok()).collect();
    let (xs, categories) = match &numeric {
        Some(xs) => (xs.clone(), None),
        None => (
            (0..a.values.len()).map(|i| i as f64).collect(),
            Some(a.values.clone()),
        ),
    };
    let log_x = a.log_x
        || numeric.as_ref().is_some_and(|xs| {
            let (lo, hi) = xs
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
            lo > 0.0 && hi / lo >= 100.0
        });
    let series = metrics
        .iter()
        .enumerate()
        .map(|(i, metric)| Series {
            label: metric.clone(),
            points: points
                .iter()
                .zip(&xs)
                .filter_map(|(p, x)| {
                    let s = p.metrics.get(metric)?;
                    let g = |k: &str| s.get(k).and_then(Value::as_f64);
                    Some(Point {
                        x: *x,
                        y: g("mean")?,
                        lo: g("min"),
                        hi: g("max"),
                    })
                })
                .collect(),
            kind: Kind::Measured,
            color: i,
        })
        .collect();
    let chart = Chart {
        title: format!(
            "{} against {} ({} seed{} a point; bars: min–max)",
            metrics.join(", "),
            a.param,
            a.seeds,
            if a.seeds == 1 { "" } else { "s" }
        ),
        command: command_line(a),
        x: Axis {
            label: format!("{}{}", a.param, param_unit(&a.param)),
            log: log_x,
            categories,
            from_zero: false,
        },
        y: Axis {
            label: metrics
                .first()
                .map(|m| format!("{m}{}", unit_of(m)))
                .unwrap_or_default(),
            log: a.log_y,
            categories: None,
            from_zero: !a.log_y,
        },
        series,
    };
    plot::render(&chart, &svg_path)?;

    let summary = SweepSummary {
        scenario: a.scenario.clone(),
        param: a.param.clone(),
        seeds: a.seeds,
        csv: csv_path.display().to_string(),
        svg: svg_path.display().to_string(),
        points,
    };
    if a.json {
        return crate::print_out(&(serde_json::to_string_pretty(&summary)? + "\n"));
    }
    let mut text = format!("{:>14}", a.param);
    for m in &metrics {
        text += &format!("  {m:>28}");
    }
    text += "\n";
    for p in &summary.points {
        text += &format!("{:>14}", p.value);
        for m in &metrics {
            let cell = p.metrics.get(m).map_or("-".to_string(), |s| {
                let g = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
                format!(
                    "{} [{}, {}]",
                    plot::human(g("mean")),
                    plot::human(g("min")),
                    plot::human(g("max"))
                )
            });
            text += &format!("  {cell:>28}");
        }
        text += "\n";
    }
    text += &format!("wrote {} and {}\n", summary.csv, summary.svg);
    crate::print_out(&text)
}

/// The unit of a swept parameter.
fn param_unit(param: &str) -> &'static str {
    match param {
        "interval" => " (s)",
        "loss" | "slow" => " (probability)",
        "bandwidth" => " (bytes/s)",
        _ => "",
    }
}

/// A CSV cell, quoted if it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The sweep's own command line, for the plot's footnote.
fn command_line(a: &SweepArgs) -> String {
    let mut s = format!(
        "grapevine sim sweep {} --param {} --values {} --seeds {}",
        a.scenario,
        a.param,
        a.values.join(","),
        a.seeds
    );
    if a.seed != 1 {
        s += &format!(" --seed {}", a.seed);
    }
    if !a.metric.is_empty() {
        s += &format!(" --metric {}", a.metric.join(","));
    }
    if !a.rest.is_empty() {
        s += &format!(" -- {}", a.rest.join(" "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_option_of_any_scenario_parses_and_wrong_ones_say_why() {
        let l = run_line("swim", "k", "3", 2, &["--nodes".into(), "50".into()]);
        assert!(parse_line(&l).is_ok());
        let l = run_line("swim", "no-lifeguard", "true", 1, &[]);
        assert!(parse_line(&l).is_ok());
        let l = run_line("state", "interval", "250ms", 1, &[]);
        assert!(parse_line(&l).is_ok());
        let Err(err) = parse_line(&run_line("merkle", "fanout", "3", 1, &[])) else {
            panic!("merkle has no --fanout");
        };
        assert!(err.to_string().contains("--fanout"), "{err}");
    }

    #[test]
    fn numeric_fields_flatten_objects_and_skip_arrays() {
        let v = serde_json::json!({"a": 1, "b": {"c": 2.5}, "d": [1, 2], "e": "x", "f": true, "g": null});
        assert_eq!(
            numeric_fields(&v),
            vec![("a".into(), 1.0), ("b.c".into(), 2.5), ("f".into(), 1.0)]
        );
    }

    #[test]
    fn stats_of_even_and_odd_counts() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0, 2.0)));
        assert_eq!(stats(&[4.0, 1.0]), Some((2.5, 1.0, 4.0, 2.5)));
        assert_eq!(stats(&[]), None);
    }
}
