//! SVG charts of simulator results: lines for models and theory, markers with min–max bars
//! for measurements, axes with units, a legend, and the command that made the data.

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One point of a series; `lo`..`hi` is the spread over seeds, if measured.
#[derive(Clone, Debug)]
pub struct Point {
    /// Horizontal position (for a categorical axis, the category's index).
    pub x: f64,
    /// The value: a mean or median.
    pub y: f64,
    /// Smallest value seen, if more than one run.
    pub lo: Option<f64>,
    /// Largest value seen.
    pub hi: Option<f64>,
}

impl Point {
    /// A point with no spread.
    pub fn new(x: f64, y: f64) -> Self {
        Point {
            x,
            y,
            lo: None,
            hi: None,
        }
    }
}

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Measured: markers joined by a line, with min–max bars.
    Measured,
    /// A model or a formula: a dashed line.
    Theory,
    /// Measured, markers only (no line): points that need not be ordered.
    Scatter,
}

/// One labelled series.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Points in drawing order.
    pub points: Vec<Point>,
    /// How it is drawn.
    pub kind: Kind,
    /// Palette index; series that belong together (a measurement and its theory) share one.
    pub color: usize,
}

/// An axis: its label with the unit, and its scale.
#[derive(Clone, Debug, Default)]
pub struct Axis {
    /// Text with the unit, e.g. "time to converge (s)".
    pub label: String,
    /// Logarithmic scale.
    pub log: bool,
    /// Category names for a categorical axis (points at 0, 1, 2...).
    pub categories: Option<Vec<String>>,
    /// Start the axis at zero (linear axes).
    pub from_zero: bool,
}

/// A whole chart.
#[derive(Clone, Debug)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// The command that produced the data, printed under the plot.
    pub command: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// The series.
    pub series: Vec<Series>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];

/// Formats an axis value compactly: 1k, 10k, 1M for large numbers, few decimals otherwise.
pub fn human(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 && (v / 1e6).fract() == 0.0 {
        format!("{}M", v / 1e6)
    } else if a >= 1e3 && (v / 1e3).fract() == 0.0 {
        format!("{}k", v / 1e3)
    } else if a == 0.0 {
        "0".into()
    } else if a < 1e-2 {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The range of an axis over all the values, padded, on a log or linear scale.
fn range(values: impl Iterator<Item = f64>, axis: &Axis) -> Result<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (!axis.log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return Err(anyhow!("nothing to plot on the axis {:?}", axis.label));
    }
    if let Some(c) = &axis.categories {
        return Ok((-0.5, c.len() as f64 - 0.5));
    }
    if axis.log {
        // Whole decades around the data.
        Ok((
            10f64.powf(lo.log10().floor()),
            10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
        ))
    } else {
        if axis.from_zero {
            lo = lo.min(0.0);
        }
        let pad = if hi > lo { (hi - lo) * 0.06 } else { 1.0 };
        Ok((
            if axis.from_zero && lo >= 0.0 {
                0.0
            } else {
                lo - pad
            },
            hi + pad,
        ))
    }
}

/// Writes the chart as an SVG file.
pub fn render(chart: &Chart, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    draw(chart, &root).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn draw(chart: &Chart, root: &DrawingArea<SVGBackend, Shift>) -> DrawResult<()> {
    root.fill(&WHITE)?;
    let (plot, foot) = root.split_vertically(518);
    for (i, line) in wrap(&format!("made by: {}", chart.command), 118)
        .iter()
        .enumerate()
    {
        foot.draw(&Text::new(
            line.clone(),
            (12, 4 + 18 * i as i32),
            ("monospace", 13).into_font().color(&RGBColor(80, 80, 80)),
        ))?;
    }
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.x));
    let ys = chart.series.iter().flat_map(|s| {
        s.points
            .iter()
            .flat_map(|p| [Some(p.y), p.lo, p.hi].into_iter().flatten())
    });
    let (x0, x1) = range(xs, &chart.x).map_err(|e| e.to_string())?;
    let (y0, y1) = range(ys, &chart.y).map_err(|e| e.to_string())?;
    let mut builder = ChartBuilder::on(&plot);
    builder
        .caption(&chart.title, ("sans-serif", 20))
        .margin(14)
        .margin_right(30)
        .x_label_area_size(46)
        .y_label_area_size(70);
    // The four scale combinations are distinct types in plotters.
    let legend = legend_corner(chart, (x0, x1), (y0, y1));
    match (chart.x.log, chart.y.log) {
        (false, false) => {
            let c = builder.build_cartesian_2d(x0..x1, y0..y1)?;
            finish(chart, c, legend)
        }
        (true, false) => {
            let c = builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1)?;
            finish(chart, c, legend)
        }
        (false, true) => {
            let c = builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale())?;
            finish(chart, c, legend)
        }
        (true, true) => {
            let c = builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
            finish(chart, c, legend)
        }
    }
}

/// Splits text into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let last = lines.last_mut().expect("one line at least");
        if !last.is_empty() && last.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// The corner of the plot with the fewest data points (and lines through it), top first.
fn legend_corner(chart: &Chart, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> SeriesLabelPosition {
    let norm = |v: f64, lo: f64, hi: f64, log: bool| {
        if log {
            (v.max(1e-300).ln() - lo.ln()) / (hi.ln() - lo.ln())
        } else {
            (v - lo) / (hi - lo)
        }
    };
    // Sample each series densely along its segments, so lines count, not only markers.
    let mut samples = Vec::new();
    for s in &chart.series {
        let p: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|p| {
                (
                    norm(p.x, x0, x1, chart.x.log),
                    norm(p.y, y0, y1, chart.y.log),
                )
            })
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        samples.extend(p.iter().copied());
        if s.kind != Kind::Scatter {
            for w in p.windows(2) {
                for k in 1..10 {
                    let t = f64::from(k) / 10.0;
                    samples.push((
                        w[0].0 + (w[1].0 - w[0].0) * t,
                        w[0].1 + (w[1].1 - w[0].1) * t,
                    ));
                }
            }
        }
    }
    let count = |left: bool, top: bool| {
        samples
            .iter()
            .filter(|(x, y)| {
                (if left { *x < 0.5 } else { *x > 0.5 })
                    && (if top { *y > 0.55 } else { *y < 0.45 })
            })
            .count()
    };
    [
        (SeriesLabelPosition::UpperLeft, count(true, true)),
        (SeriesLabelPosition::UpperRight, count(false, true)),
        (SeriesLabelPosition::LowerRight, count(false, false)),
        (SeriesLabelPosition::LowerLeft, count(true, false)),
    ]
    .into_iter()
    .min_by_key(|(_, c)| *c)
    .map_or(SeriesLabelPosition::UpperLeft, |(p, _)| p)
}

fn finish<'a, X, Y>(
    chart: &Chart,
    mut c: ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    legend: SeriesLabelPosition,
) -> DrawResult<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let x_fmt = |v: &f64| match &chart.x.categories {
        Some(cats) => {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                cats.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
        None => human(*v),
    };
    let mut mesh = c.configure_mesh();
    mesh.x_desc(&chart.x.label)
        .y_desc(&chart.y.label)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| human(*v))
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .light_line_style(RGBColor(235, 235, 235));
    if let Some(cats) = &chart.x.categories {
        mesh.x_labels(cats.len() * 2 + 1);
    }
    mesh.draw()?;
    let ok = |p: &Point| p.x.is_finite() && p.y.is_finite() && (!chart.y.log || p.y > 0.0);
    for s in &chart.series {
        let color = PALETTE[s.color % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| ok(p))
            .map(|p| (p.x, p.y))
            .collect();
        let legend_style = color.stroke_width(2);
        match s.kind {
            Kind::Theory => {
                c.draw_series(DashedLineSeries::new(pts, 6, 4, color.stroke_width(2)))?
                    .label(&s.label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], legend_style));
            }
            Kind::Measured | Kind::Scatter => {
                if s.kind == Kind::Measured {
                    c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
                }
                for p in s.points.iter().filter(|p| ok(p)) {
                    if let (Some(lo), Some(hi)) = (p.lo, p.hi) {
                        if !chart.y.log || lo > 0.0 {
                            c.draw_series(std::iter::once(ErrorBar::new_vertical(
                                p.x,
                                lo,
                                p.y,
                                hi,
                                color.stroke_width(1),
                                8,
                            )))?;
                        }
                    }
                }
                c.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?
                    .label(&s.label)
                    .legend(move |(x, y)| Circle::new((x + 4, y), 4, color.filled()));
            }
        }
    }
    c.configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("aaaaaaa b", 3), vec!["aaaaaaa", "b"]);
    }

    #[test]
    fn human_labels() {
        assert_eq!(human(1000.0), "1k");
        assert_eq!(human(1e6), "1M");
        assert_eq!(human(2.5), "2.5");
        assert_eq!(human(0.0), "0");
        assert_eq!(human(0.001), "1e-3");
        assert_eq!(human(150.0), "150");
    }

    #[test]
    fn renders_every_scale_and_refuses_nothing_to_plot() {
        let dir = tempfile::tempdir().unwrap();
        for (lx, ly) in [(false, false), (true, false), (false, true), (true, true)] {
            let chart = Chart {
                title: "t".into(),
                command: "grapevine sim x".into(),
                x: Axis {
                    label: "nodes".into(),
                    log: lx,
                    ..Axis::default()
                },
                y: Axis {
                    label: "rounds".into(),
                    log: ly,
                    ..Axis::default()
                },
                series: vec![Series {
                    label: "m".into(),
                    points: vec![
                        Point {
                            x: 10.0,
                            y: 2.0,
                            lo: Some(1.0),
                            hi: Some(3.0),
                        },
                        Point::new(100.0, 4.0),
                    ],
                    kind: Kind::Measured,
                    color: 0,
                }],
            };
            let path = dir.path().join(format!("{lx}{ly}.svg"));
            render(&chart, &path).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.contains("grapevine sim x") && svg.contains("nodes"));
        }
        let empty = Chart {
            title: "t".into(),
            command: "c".into(),
            x: Axis::default(),
            y: Axis::default(),
            series: vec![],
        };
        assert!(render(&empty, &dir.path().join("e.svg")).is_err());
    }
}
