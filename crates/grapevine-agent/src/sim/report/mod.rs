//! `grapevine sim report`: regenerates docs/results.md and its plots from the simulator.
//!
//! Each section is built twice by the same code: once to learn which scenario runs it needs
//! (every lookup answers null), then, after all runs have run in parallel, to build its
//! tables and charts from their reports. So a figure names exactly the commands that made it,
//! and each of those commands, run alone, prints the report the figure was drawn from.

mod detection;
mod spreading;
mod state;

use detection::{accuracy, detection, membership};
use spreading::{dissemination, rumor};
use state::{aggregate, merkle, state};

use super::plot::{self, Axis, Chart, Kind, Point, Series};
use super::sweep::run_all_typed;
use super::Report;
use anyhow::{anyhow, Context, Result};
use grapevine_sim::scenario::aggregate::{AggregateReport, RoundError};
use grapevine_sim::scenario::idle::IdleReport;
use grapevine_sim::scenario::merkle::MerkleReport;
use grapevine_sim::scenario::rumor::RumorReport;
use grapevine_sim::scenario::spread::SpreadReport;
use grapevine_sim::scenario::state::StateReport;
use grapevine_sim::scenario::swim::SwimReport;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Options of `grapevine sim report`.
#[derive(clap::Args, Clone)]
pub struct ReportArgs {
    /// Where results.md goes; its plots go to plots/ beside it.
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
    /// Small sizes (at most 1,000 nodes) for a quick check that every part is produced; the
    /// figures then do not stand for the real ones.
    #[arg(long)]
    pub quick: bool,
    /// Simultaneous runs [default: the machine's cores]; the output does not depend on it.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Print the files written and the acceptance checks as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The cluster sizes and run counts of a report.
struct Sizes {
    /// Cluster sizes of the membership and state runs.
    nodes: Vec<u32>,
    /// The size detection and accuracy are measured at (the issue's 1,000).
    detect_nodes: u32,
    /// Periods of the accuracy run.
    accuracy_periods: u32,
    /// Sizes of the phone-call model.
    spread_nodes: Vec<u32>,
    /// Runs of the models.
    model_runs: u32,
    /// Keys of the Merkle runs.
    merkle_keys: u32,
    /// Sizes of the slow-node, formula and detector comparisons.
    small: u32,
    /// Periods of the formula runs.
    formula_periods: u32,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                nodes: vec![50, 100, 200],
                detect_nodes: 200,
                accuracy_periods: 200,
                spread_nodes: vec![100, 1000, 10_000],
                model_runs: 10,
                merkle_keys: 10_000,
                small: 60,
                formula_periods: 100,
            }
        } else {
            Sizes {
                nodes: vec![100, 300, 1000, 3000, 10_000],
                detect_nodes: 1000,
                accuracy_periods: 1000,
                spread_nodes: vec![100, 1000, 10_000, 100_000, 1_000_000],
                model_runs: 20,
                merkle_keys: 1_000_000,
                small: 200,
                formula_periods: 600,
            }
        }
    }

    /// The three sizes the state tables use: smallest, middle and largest.
    fn three(&self) -> [u32; 3] {
        let n = &self.nodes;
        [n[0], n[n.len() / 2], n[n.len() - 1]]
    }
}

/// Scenario reports by command line; while collecting, every lookup is null and recorded.
struct Lab {
    collecting: bool,
    wanted: Vec<String>,
    results: HashMap<String, Report>,
}

impl Lab {
    /// A lab that records the runs asked for.
    fn collecting() -> Self {
        Lab {
            collecting: true,
            wanted: Vec::new(),
            results: HashMap::new(),
        }
    }

    /// The command line of a recorded run, as the scenario parser takes it.
    fn line(cmd: &str) -> Vec<String> {
        let mut l: Vec<String> = cmd.split_whitespace().map(String::from).collect();
        l.push("--no-wall-clock".into());
        l
    }

    /// The report of `grapevine sim CMD --no-wall-clock` (none while collecting).
    fn run(&mut self, cmd: &str) -> Option<&Report> {
        if self.collecting {
            if !self.wanted.iter().any(|w| w == cmd) {
                self.wanted.push(cmd.to_string());
            }
            return None;
        }
        self.results.get(cmd)
    }
}

fn list(v: &[u32]) -> String {
    v.iter()
        .map(|x| plot::human(f64::from(*x)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The least and greatest of `xs`, and how far they stray from their midpoint, as a share
/// of it (1 when there is nothing to measure).
fn band(xs: &[f64]) -> (f64, f64, f64) {
    let (lo, hi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
    let mid = (lo + hi) / 2.0;
    (lo, hi, if mid > 0.0 { (hi - mid) / mid } else { 1.0 })
}

/// The typed report of one scenario's run, by the scenario's name.
macro_rules! lookups {
    ($($name:ident: $variant:ident($ty:ty),)*) => {
        impl Lab {
            $(
                #[doc = concat!("The report of a `", stringify!($name), "` run.")]
                fn $name(&mut self, cmd: &str) -> Option<$ty> {
                    match self.run(cmd)? {
                        Report::$variant(r) => Some(r.clone()),
                        _ => None,
                    }
                }
            )*
        }
    };
}

lookups! {
    swim: Swim(SwimReport),
    spread: Spread(SpreadReport),
    rumor: Rumor(RumorReport),
    merkle: Merkle(MerkleReport),
    state: State(StateReport),
    aggregate: Aggregate(AggregateReport),
    idle: Idle(IdleReport),
}

/// A number a report holds, as the tables print it: a figure that is absent or not finite
/// is none (shown as a dash, left out of charts).
trait Figure {
    fn figure(self) -> Option<f64>;
}

impl Figure for f64 {
    fn figure(self) -> Option<f64> {
        self.is_finite().then_some(self)
    }
}

macro_rules! whole_figures {
    ($($t:ty),*) => {
        $(impl Figure for $t {
            fn figure(self) -> Option<f64> {
                Some(self as f64)
            }
        })*
    };
}

whole_figures!(u8, u32, u64, usize);

impl<T: Figure> Figure for Option<T> {
    fn figure(self) -> Option<f64> {
        self.and_then(Figure::figure)
    }
}

/// A field of a report, if the run has a report and the field a figure.
fn get<R, T: Figure>(r: &Option<R>, field: impl FnOnce(&R) -> T) -> Option<f64> {
    r.as_ref().and_then(|r| field(r).figure())
}

/// A field of several runs' reports: the figures there are.
fn column<R, T: Figure>(rs: &[Option<R>], field: impl Fn(&R) -> T) -> Vec<f64> {
    rs.iter().filter_map(|r| get(r, &field)).collect()
}

fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

/// Thousands separated by commas.
fn int(v: Option<f64>) -> String {
    let Some(x) = v else { return "–".into() };
    let s = format!("{}", x.round() as i64);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One section of results.md and its charts.
struct Section {
    markdown: String,
    charts: Vec<(String, Chart)>,
}

/// An acceptance check: what is required, what was measured, whether it holds.
struct Check {
    what: String,
    required: String,
    measured: String,
    holds: bool,
}

struct Builder {
    sections: Vec<Section>,
    checks: Vec<Check>,
}

impl Builder {
    fn check(&mut self, what: &str, required: &str, measured: String, holds: bool) {
        self.checks.push(Check {
            what: what.into(),
            required: required.into(),
            measured,
            holds,
        });
    }

    fn section(&mut self, markdown: String, charts: Vec<(String, Chart)>) {
        let mut md = markdown;
        for (name, chart) in &charts {
            let _ = write!(
                md,
                "\n![{}](plots/{name}.svg)\n\n*Made by* `{}`\n",
                chart.title, chart.command
            );
        }
        self.sections.push(Section {
            markdown: md,
            charts,
        });
    }
}

fn axis(label: &str, log: bool) -> Axis {
    Axis {
        label: label.into(),
        log,
        categories: None,
        from_zero: !log,
    }
}

fn series(label: &str, kind: Kind, color: usize, points: Vec<Point>) -> Series {
    Series {
        label: label.into(),
        points,
        kind,
        color,
    }
}

/// Points from (x, Option<y>) pairs, skipping the missing.
fn pts(v: impl IntoIterator<Item = (f64, Option<f64>)>) -> Vec<Point> {
    v.into_iter()
        .filter_map(|(x, y)| y.map(|y| Point::new(x, y)))
        .collect()
}

/// A point with the min–max spread of several values (mean in the middle).
fn spread_point(x: f64, ys: &[f64]) -> Option<Point> {
    let (mean, lo, hi, _) = super::sweep::stats(ys)?;
    Some(Point {
        x,
        y: mean,
        lo: Some(lo),
        hi: Some(hi),
    })
}

/// Every section, in order; `lab` answers (or records) the runs.
fn build(lab: &mut Lab, z: &Sizes) -> Builder {
    let mut b = Builder {
        sections: Vec::new(),
        checks: Vec::new(),
    };
    membership(lab, z, &mut b);
    detection(lab, z, &mut b);
    accuracy(lab, z, &mut b);
    dissemination(lab, z, &mut b);
    rumor(lab, z, &mut b);
    state(lab, z, &mut b);
    merkle(lab, z, &mut b);
    aggregate(lab, z, &mut b);
    b
}

/// Runs the report.
pub fn run(a: &ReportArgs) -> Result<()> {
    let z = Sizes::new(a.quick);
    let mut lab = Lab::collecting();
    build(&mut lab, &z);
    // Biggest runs first, so the last ones to finish are short.
    let cost = |cmd: &str| -> u64 {
        let n: u64 = cmd
            .split_whitespace()
            .skip_while(|w| *w != "--nodes")
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let heavy = if cmd.contains("--detector phi") {
            40
        } else {
            1
        };
        n * heavy
    };
    let mut order: Vec<String> = lab.wanted.clone();
    order.sort_by_key(|c| std::cmp::Reverse(cost(c)));
    // run_all parses every line before it runs any.
    let lines: Vec<Vec<String>> = order.iter().map(|c| Lab::line(c)).collect();
    let started = std::time::Instant::now();
    let reports = run_all_typed(&lines, a.jobs, "report")?;
    lab.results = order.into_iter().zip(reports).collect();
    lab.collecting = false;
    let built = build(&mut lab, &z);

    let plots = a.out.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    for s in &built.sections {
        for (name, chart) in &s.charts {
            plot::render(chart, &plots.join(format!("{name}.svg")))?;
        }
    }
    let md = markdown(&built, a.quick, lab.results.len());
    let path = a.out.join("results.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    let failed: Vec<&Check> = built.checks.iter().filter(|c| !c.holds).collect();
    let charts: usize = built.sections.iter().map(|s| s.charts.len()).sum();
    if a.json {
        let checks: Vec<Value> = built
            .checks
            .iter()
            .map(|c| {
                serde_json::json!({"check": c.what, "required": c.required, "measured": c.measured, "holds": c.holds})
            })
            .collect();
        let names: Vec<String> = built
            .sections
            .iter()
            .flat_map(|s| {
                s.charts
                    .iter()
                    .map(|(n, _)| plots.join(format!("{n}.svg")).display().to_string())
            })
            .collect();
        let v = serde_json::json!({
            "results": path.display().to_string(),
            "plots": names,
            "runs": lab.results.len(),
            "wall_seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "checks": checks,
        });
        crate::print_out(&(serde_json::to_string_pretty(&v)? + "\n"))?;
    }
    let mut text = format!(
        "wrote {} and {charts} plots in {} from {} runs in {:.0} s\n",
        path.display(),
        plots.display(),
        lab.results.len(),
        started.elapsed().as_secs_f64()
    );
    for c in &built.checks {
        let _ = writeln!(
            text,
            "{} {}: {}",
            if c.holds { "holds " } else { "FAILS " },
            c.what,
            c.measured
        );
    }
    if !a.json {
        crate::print_out(&text)?;
    }
    if !failed.is_empty() && !a.quick {
        return Err(anyhow!("{} acceptance checks fail", failed.len()));
    }
    Ok(())
}

fn markdown(b: &Builder, quick: bool, runs: usize) -> String {
    let mut md = String::from(
        "# Measured results: the simulator\n\n\
         <!-- Generated by `grapevine sim report`: edit crates/grapevine-agent/src/sim/report/, not this file. -->\n\n\
         Everything on this page is regenerated, plots included, by one command from a fresh \
         clone:\n\n```sh\ncargo run --release -- sim report\n```\n\n",
    );
    let _ = write!(
        md,
        "It runs {runs} simulations of the real protocol (and of the reference models) in \
         parallel, each deterministic: every table row and plot names its command, and that \
         command run alone prints the report it came from, identical from run to run. Times \
         are in protocol periods (500 ms, `lan`) or rounds unless marked. Figures measured on \
         real networks and processes (agents, namespaces, Serf, applications, benchmarks) are \
         in [measurements.md](measurements.md).\n\n"
    );
    if quick {
        md += "**This is a quick report (`--quick`): small clusters that check every part is \
               produced. Its figures do not stand for the full ones.**\n\n";
    }
    md += "## Acceptance checks\n\n| check | required | measured | holds |\n|---|---|---|---|\n";
    for c in &b.checks {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            c.what,
            c.required,
            c.measured,
            if c.holds { "yes" } else { "**no**" }
        );
    }
    md += "\n";
    for s in &b.sections {
        md += &s.markdown;
        md += "\n";
    }
    md
}

#[cfg(test)]
mod tests {
    use super::super::sweep::parse_line;
    use super::spreading::mean_field_curve;
    use super::*;

    #[test]
    fn mean_field_is_logistic_and_ends_at_one() {
        let c = mean_field_curve("push", 1, 1000, 40);
        assert!(
            (c[1] - 2.0 / 1000.0).abs() < 1e-5,
            "push about doubles early: {}",
            c[1]
        );
        assert!(c.windows(2).all(|w| w[1] >= w[0]));
        assert!(c[40] > 0.999_999);
        let pp = mean_field_curve("push-pull", 1, 1000, 40);
        assert!(
            (pp[1] - 3.0 / 1000.0).abs() < 1e-5,
            "push-pull about triples: {}",
            pp[1]
        );
    }

    #[test]
    fn every_section_asks_for_runs_that_parse() {
        for quick in [true, false] {
            let mut lab = Lab::collecting();
            let b = build(&mut lab, &Sizes::new(quick));
            assert!(lab.wanted.len() > 50);
            for w in &lab.wanted {
                parse_line(&Lab::line(w)).unwrap();
            }
            // Without results every check fails rather than passing vacuously.
            assert!(
                b.checks.iter().all(|c| !c.holds),
                "a check holds on no data"
            );
        }
    }

    #[test]
    fn thousands() {
        assert_eq!(int(Some(1234567.0)), "1,234,567");
        assert_eq!(int(Some(12.0)), "12");
        assert_eq!(int(None), "–");
    }
}
