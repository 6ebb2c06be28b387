//! The dissemination and rumour sections: the phone-call model against its mean field and
//! the real protocol, and rumour mongering against Demers et al.

use super::*;

/// The mean-field model of one round of the random phone-call model with `fanout` calls a
/// node: the fraction informed after the round, from the fraction `i` before it. An
/// uninformed node stays so if no informed node pushes to it (probability e^(−fanout·i)) and,
/// pulling, if each node it calls is uninformed ((1−i)^fanout). This is the discrete form of
/// the logistic equation di/dt = c·i·(1−i).
pub(super) fn mean_field(mode: &str, fanout: u32, i: f64) -> f64 {
    let f = f64::from(fanout);
    let stay = match mode {
        "push" => (-f * i).exp(),
        "pull" => (1.0 - i).powf(f),
        _ => (-f * i).exp() * (1.0 - i).powf(f),
    };
    1.0 - (1.0 - i) * stay
}

/// The model's curve from one informed node among `n`, for `rounds` rounds (round 0 first).
pub(super) fn mean_field_curve(mode: &str, fanout: u32, n: u32, rounds: usize) -> Vec<f64> {
    let mut i = 1.0 / f64::from(n);
    let mut v = vec![i];
    for _ in 0..rounds {
        i = mean_field(mode, fanout, i);
        v.push(i);
    }
    v
}

pub(super) fn theory_rounds(mode: &str, n: f64) -> f64 {
    match mode {
        "push" => n.log2() + n.ln(),
        "pull" => n.log2() + n.ln().log2(),
        _ => n.ln() / 3f64.ln() + n.ln().ln(),
    }
}

pub(super) const MODES: [&str; 3] = ["push", "pull", "push-pull"];

/// Demers et al. (1987), Tables 1 and 2 (n = 1000): k, residue, traffic.
pub(super) const DEMERS_FEEDBACK_COUNTER: [(u32, f64, f64); 5] = [
    (1, 0.18, 1.7),
    (2, 0.037, 3.3),
    (3, 0.011, 4.5),
    (4, 0.0036, 5.6),
    (5, 0.0012, 6.7),
];
pub(super) const DEMERS_BLIND_COIN: [(u32, f64, f64); 5] = [
    (1, 0.96, 0.04),
    (2, 0.205, 1.59),
    (3, 0.060, 2.82),
    (4, 0.021, 3.91),
    (5, 0.008, 4.95),
];

pub(super) fn dissemination(lab: &mut Lab, z: &Sizes, b: &mut Builder) {
    let runs = z.model_runs;
    let mut md = format!(
        "## Dissemination: rounds against N\n\n### The random phone-call model\n\n\
         `grapevine sim spread --nodes N --mode M --runs {runs}` (fanout 1, no loss; the model \
         is separate from the protocol code). Theory: push log2 N + ln N (Pittel 1987), \
         push-pull log3 N + ln ln N and pull log2 N + O(log log N) (Karp et al. 2000; the \
         columns show the leading terms).\n\n\
         | N | push (mean / p99) | theory | pull (mean / p99) | theory | push-pull (mean / p99) | theory |\n|---|---|---|---|---|---|---|\n"
    );
    let mut model: HashMap<&str, Vec<(f64, Option<SpreadReport>)>> = HashMap::new();
    for &n in &z.spread_nodes {
        let mut row = format!("| {} |", int(Some(f64::from(n))));
        for m in MODES {
            let r = lab.spread(&format!("spread --nodes {n} --mode {m} --runs {runs}"));
            let _ = write!(
                row,
                " {} / {} | {:.1} |",
                f(get(&r, |r| r.rounds_mean), 2),
                f(get(&r, |r| r.rounds_p99), 0),
                theory_rounds(m, f64::from(n))
            );
            model.entry(m).or_default().push((f64::from(n), r));
        }
        md += &row;
        md += "\n";
    }
    let mut worst: f64 = 0.0;
    let mut compared = 0;
    for m in ["push", "push-pull"] {
        for (n, r) in &model[m] {
            if let Some(v) = get(r, |r| r.rounds_mean) {
                worst = worst.max((v - theory_rounds(m, *n)).abs());
                compared += 1;
            }
        }
    }
    b.check(
        "Phone-call model against theory (issue 2/6)",
        "push and push-pull rounds follow their laws",
        format!("largest gap to the leading terms: {worst:.2} rounds"),
        worst < 2.0 && compared == 2 * z.spread_nodes.len(),
    );
    let mut s = Vec::new();
    for (c, m) in MODES.iter().enumerate() {
        let v = &model[m];
        s.push(series(
            &format!("{m}, model"),
            Kind::Measured,
            c,
            v.iter()
                .filter_map(|(n, r)| {
                    let mean = get(r, |r| r.rounds_mean)?;
                    Some(Point {
                        x: *n,
                        y: mean,
                        lo: get(r, |r| r.rounds_min),
                        hi: get(r, |r| r.rounds_max),
                    })
                })
                .collect(),
        ));
        s.push(series(
            &format!("{m}, theory"),
            Kind::Theory,
            c,
            v.iter()
                .map(|(n, _)| Point::new(*n, theory_rounds(m, *n)))
                .collect(),
        ));
    }
    let model_chart = Chart {
        title: "Rounds until every node knows: the phone-call model against theory".into(),
        command: format!(
            "grapevine sim spread --nodes N --mode M --runs {runs} (N = {}; M = push, pull, push-pull)",
            list(&z.spread_nodes)
        ),
        x: axis("cluster size N (nodes, log scale)", true),
        y: axis("rounds (bars: fastest and slowest run)", false),
        series: s,
    };
    // The real protocol, fanout 1 as in the model.
    let three = z.three();
    md += "\n### The real protocol\n\n`grapevine sim state --nodes N --mode M --fanout 1`: the \
           real protocol's state exchanges (one partner a round, as in the model), time until \
           every node holds one write, in rounds.\n\n\
           | N | push | pull | push-pull |\n|---|---|---|---|\n";
    let mut real: HashMap<&str, Vec<(f64, Option<StateReport>)>> = HashMap::new();
    for &n in &three {
        let mut row = format!("| {} |", int(Some(f64::from(n))));
        for m in MODES {
            let r = lab.state(&format!("state --nodes {n} --mode {m} --fanout 1"));
            let rounds = get(&r, |r| r.seconds_to_all)
                .zip(get(&r, |r| r.round_seconds))
                .map(|(s, r)| s / r);
            let _ = write!(row, " {} |", f(rounds, 2));
            real.entry(m).or_default().push((f64::from(n), r));
        }
        md += &row;
        md += "\n";
    }
    let mut s = Vec::new();
    for (c, m) in MODES.iter().enumerate() {
        let v = &real[m];
        s.push(series(
            &format!("{m}, real protocol"),
            Kind::Measured,
            c,
            pts(v.iter().map(|(n, r)| {
                (
                    *n,
                    get(r, |r| r.seconds_to_all)
                        .zip(get(r, |r| r.round_seconds))
                        .map(|(s, r)| s / r),
                )
            })),
        ));
        s.push(series(
            &format!("{m}, theory"),
            Kind::Theory,
            c,
            v.iter()
                .map(|(n, _)| Point::new(*n, theory_rounds(m, *n)))
                .collect(),
        ));
    }
    md += "\nThe real protocol's rounds are not synchronous: a node runs its round as soon as \
           news reaches it (at most one a second), and a ping that shows a difference opens an \
           exchange at once, so news crosses several hops within one round and the real \
           protocol finishes below the synchronous model; it grows with log N all the same.\n";
    let real_chart = Chart {
        title: "Rounds until every node holds a write: the real protocol, fanout 1".into(),
        command: format!(
            "grapevine sim state --nodes N --mode M --fanout 1 (N = {}; M = push, pull, push-pull)",
            list(&three)
        ),
        x: axis("cluster size N (nodes, log scale)", true),
        y: axis("rounds (one exchange per node)", false),
        series: s,
    };
    // The S-curve.
    let sn = z.spread_nodes[z.spread_nodes.len().min(3) - 1];
    let big = three[2];
    let mut s = Vec::new();
    let mut worst_curve: f64 = 0.0;
    for (c, m) in ["push", "push-pull"].iter().enumerate() {
        let r = lab.spread(&format!("spread --nodes {sn} --mode {m} --runs {runs}"));
        let curve: Vec<f64> = r.map(|r| r.informed_by_round).unwrap_or_default();
        let mf = mean_field_curve(m, 1, sn, curve.len().saturating_sub(1));
        for (a, b) in curve.iter().zip(&mf) {
            worst_curve = worst_curve.max((a - b).abs());
        }
        s.push(series(
            &format!("{m}, model (mean of {runs} runs)"),
            Kind::Measured,
            c,
            curve
                .iter()
                .enumerate()
                .map(|(i, y)| Point::new(i as f64, *y))
                .collect(),
        ));
        s.push(series(
            &format!("{m}, logistic (mean-field)"),
            Kind::Theory,
            c,
            mf.iter()
                .enumerate()
                .map(|(i, y)| Point::new(i as f64, *y))
                .collect(),
        ));
    }
    let r = lab.state(&format!("state --nodes {big} --mode push-pull --fanout 1"));
    let reached: Vec<f64> = r.map(|r| r.reached_by_round).unwrap_or_default();
    s.push(series(
        &format!(
            "push-pull, real protocol ({} nodes)",
            plot::human(f64::from(big))
        ),
        Kind::Scatter,
        2,
        std::iter::once(Point::new(0.0, 1.0 / f64::from(big)))
            .chain(
                reached
                    .iter()
                    .enumerate()
                    .map(|(i, y)| Point::new(i as f64 + 1.0, *y)),
            )
            .collect(),
    ));
    md += &format!(
        "\n### The epidemic S-curve\n\nThe share of nodes informed after each round at N = {}, \
         against the mean-field model: an uninformed node stays uninformed if no informed \
         node pushes to it (probability e^(−i)) and, pulling, if the node it calls is \
         uninformed (1 − i). The recursion is the discrete logistic equation; the model's \
         mean curve stays within {:.3} of it.\n",
        int(Some(f64::from(sn))),
        worst_curve
    );
    let s_chart = Chart {
        title: format!(
            "Share of nodes informed per round (N = {})",
            plot::human(f64::from(sn))
        ),
        command: format!(
            "grapevine sim spread --nodes {sn} --mode M --runs {runs}; grapevine sim state \
             --nodes {big} --mode push-pull --fanout 1"
        ),
        x: axis("round", false),
        y: axis("share of nodes informed", false),
        series: s,
    };
    b.section(
        md,
        vec![
            ("rounds-model".into(), model_chart),
            ("rounds-real".into(), real_chart),
            ("s-curve".into(), s_chart),
        ],
    );
}

pub(super) fn rumor(lab: &mut Lab, z: &Sizes, b: &mut Builder) {
    let runs = z.model_runs * 10;
    let mut md = format!(
        "## Rumour mongering against Demers et al. (1987)\n\n`grapevine sim rumor --variant V \
         --k K --runs {runs}` (n = 1,000); the paper's values are its Tables 1 and 2. Residue \
         is the share of sites that never hear the rumour; traffic, messages per site.\n\n\
         | variant | k | residue | paper | traffic | paper |\n|---|---|---|---|---|---|\n"
    );
    let mut s = Vec::new();
    let mut worst: f64 = 0.0;
    let mut compared = 0;
    for (c, (variant, paper)) in [
        ("push-feedback-counter", DEMERS_FEEDBACK_COUNTER),
        ("push-blind-coin", DEMERS_BLIND_COIN),
    ]
    .into_iter()
    .enumerate()
    {
        let mut ours = Vec::new();
        for (k, res, traffic) in paper {
            let r = lab.rumor(&format!("rumor --variant {variant} --k {k} --runs {runs}"));
            let (a, t) = (get(&r, |r| r.residue), get(&r, |r| r.traffic));
            if let (Some(a), Some(t)) = (a, t) {
                compared += 1;
                worst = worst.max(((a - res) / res).abs().min((a - res).abs() / 0.005));
                worst = worst.max((t - traffic).abs() / 0.1);
            }
            let _ = writeln!(
                md,
                "| {variant} | {k} | {} | {res} | {} | {traffic} |",
                f(a, 4),
                f(t, 2)
            );
            ours.push((t, a));
        }
        s.push(series(
            &format!("{variant}, measured (k = 1…5)"),
            Kind::Measured,
            c,
            ours.into_iter()
                .filter_map(|(t, a)| Some(Point::new(t?, a?)))
                .collect(),
        ));
        s.push(series(
            &format!("{variant}, Demers et al."),
            Kind::Theory,
            c,
            paper.iter().map(|(_, r, t)| Point::new(*t, *r)).collect(),
        ));
    }
    b.check(
        "Rumour mongering against the paper (issue 2/6)",
        "residue and traffic as in Demers et al., Tables 1 and 2",
        format!("largest gap {worst:.2} (1 = 10 % of the residue or 0.005, or 0.1 in traffic)"),
        compared == 10 && (worst <= 1.0 || z.model_runs < 20),
    );
    md += "\nMore traffic buys exponentially less residue: each extra message per site cuts \
           the share of sites that miss the rumour by a constant factor, as the paper found.\n";
    let chart = Chart {
        title: "Rumour mongering: residue against traffic (n = 1,000)".into(),
        command: format!(
            "grapevine sim rumor --variant V --k K --runs {runs} (V = push-feedback-counter, \
             push-blind-coin; K = 1…5)"
        ),
        x: axis("traffic (messages per site)", false),
        y: axis("residue (share never informed, log scale)", true),
        series: s,
    };
    b.section(md, vec![("rumor".into(), chart)]);
}
