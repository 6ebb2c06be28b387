//! The replicated-state sections: spreading state, Merkle anti-entropy and push-sum.

use super::*;

pub(super) fn state(lab: &mut Lab, z: &Sizes, b: &mut Builder) {
    let three = z.three();
    let mut md = String::from(
        "## Replicated state: the real protocol\n\n`grapevine sim state --nodes N` (fanout 3, \
         push-pull, a round as soon as a node has news and at most one a second; one write to \
         the writer's own state and to a shared key after the cluster joined; steady state \
         measured ten rounds after convergence):\n\n\
         | N | rounds to converge | to half / 99 % / all (s) | bytes/node/round while spreading | in steady state | lost writes |\n|---|---|---|---|---|---|\n",
    );
    let mut lost_total = 0.0;
    for &n in &three {
        let r = lab.state(&format!("state --nodes {n}"));
        lost_total += get(&r, |r| r.lost_writes).unwrap_or(1.0);
        let _ = writeln!(
            md,
            "| {} | {} | {} / {} / {} | {} | {} | {} |",
            int(Some(f64::from(n))),
            f(get(&r, |r| r.rounds_to_converge), 0),
            f(get(&r, |r| r.seconds_to_half), 2),
            f(get(&r, |r| r.seconds_to_99), 2),
            f(get(&r, |r| r.seconds_to_all), 2),
            f(get(&r, |r| r.bytes_per_node_per_round), 1),
            f(get(&r, |r| r.steady_bytes_per_node_per_round), 1),
            int(get(&r, |r| r.lost_writes))
        );
    }
    let pn = z.small;
    let p = lab.state(&format!(
        "state --nodes {pn} --writes 20 --partition-at 2 --heal-at 40"
    ));
    lost_total += get(&p, |r| r.lost_writes).unwrap_or(1.0);
    md += &format!(
        "\nPartition: `grapevine sim state --nodes {pn} --writes 20 --partition-at 2 --heal-at \
         40`: both halves write their own keys and the same four shared keys during the \
         split; after the heal every node holds identical state within {} rounds, **{}** \
         writes lost.\n",
        f(get(&p, |r| r.rounds_to_converge), 0),
        int(get(&p, |r| r.lost_writes))
    );
    b.check(
        "No write lost (issue 2/6)",
        "every write present everywhere, with and without a partition",
        format!("{} lost", int(Some(lost_total))),
        lost_total == 0.0,
    );
    // Convergence under a bandwidth budget.
    let bn = z.small + z.small / 2;
    let writes = bn / 10;
    let budgets = [100u32, 150, 200, 300, 500, 1000, 2000, 5000];
    let mut conv = Vec::new();
    let mut used = Vec::new();
    md += &format!(
        "\n### Convergence under a bandwidth budget\n\n`grapevine sim state --nodes {bn} \
         --writes {writes} --rounds 200 --bandwidth B`: each node caps its state traffic at B \
         bytes a second; writes still converge, later.\n\n\
         | budget (B/s) | rounds to converge | bytes/node/round while spreading | lost writes |\n|---|---|---|---|\n"
    );
    for &bw in &budgets {
        let r = lab.state(&format!(
            "state --nodes {bn} --writes {writes} --rounds 200 --bandwidth {bw}"
        ));
        let _ = writeln!(
            md,
            "| {bw} | {} | {} | {} |",
            f(get(&r, |r| r.rounds_to_converge), 0),
            f(get(&r, |r| r.bytes_per_node_per_round), 1),
            int(get(&r, |r| r.lost_writes))
        );
        conv.push((f64::from(bw), get(&r, |r| r.rounds_to_converge)));
        used.push((f64::from(bw), get(&r, |r| r.bytes_per_node_per_round)));
    }
    let free = lab.state(&format!(
        "state --nodes {bn} --writes {writes} --rounds 200"
    ));
    let _ = writeln!(
        md,
        "| none | {} | {} | {} |",
        f(get(&free, |r| r.rounds_to_converge), 0),
        f(get(&free, |r| r.bytes_per_node_per_round), 1),
        int(get(&free, |r| r.lost_writes))
    );
    let free_rounds = get(&free, |r| r.rounds_to_converge);
    let budget_chart = Chart {
        title: format!("Convergence under a per-node bandwidth cap ({bn} nodes, {writes} writes)"),
        command: format!(
            "grapevine sim state --nodes {bn} --writes {writes} --rounds 200 --bandwidth B \
             (B = {})",
            budgets
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        x: axis("bandwidth cap (bytes per node per second, log scale)", true),
        y: axis("rounds to converge (a round a second)", false),
        series: vec![
            series("capped", Kind::Measured, 0, pts(conv)),
            series(
                "uncapped",
                Kind::Theory,
                7,
                free_rounds
                    .map(|r| {
                        budgets
                            .iter()
                            .map(|b| Point::new(f64::from(*b), r))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
        ],
    };
    b.section(md, vec![("bandwidth-budget".into(), budget_chart)]);
}

pub(super) fn merkle(lab: &mut Lab, z: &Sizes, b: &mut Builder) {
    let keys = z.merkle_keys;
    let diffs = [0u32, 1, 10, 100, 1000, 10_000];
    let mut md = format!(
        "## Merkle anti-entropy\n\n`grapevine sim merkle --keys {keys} --diff D` (16-byte \
         values; every message encoded as a wire frame):\n\n\
         | differing keys | bytes | round trips | share of a full exchange |\n|---|---|---|---|\n"
    );
    let mut p = Vec::new();
    let mut full = Vec::new();
    let mut per_key = Vec::new();
    for &d in diffs.iter().filter(|d| **d < keys) {
        let r = lab.merkle(&format!("merkle --keys {keys} --diff {d}"));
        let bytes = get(&r, |r| r.bytes);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} % |",
            int(Some(f64::from(d))),
            int(bytes),
            f(get(&r, |r| r.round_trips), 0),
            f(get(&r, |r| r.fraction_of_full).map(|x| x * 100.0), 4)
        );
        if let (true, Some(by)) = (d >= 1, bytes) {
            per_key.push(by / f64::from(d));
        }
        // Zero differences plot at 0.5 on the log axis (labelled in the table).
        p.push((f64::from(d.max(1)) * if d == 0 { 0.5 } else { 1.0 }, bytes));
        full.push(Point::new(
            f64::from(d.max(1)) * if d == 0 { 0.5 } else { 1.0 },
            get(&r, |r| r.full_exchange_bytes).unwrap_or(f64::NAN),
        ));
    }
    let (lo, hi) = per_key
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
    md += &format!(
        "\nBytes grow with the number of differing keys, {lo:.0}–{hi:.0} bytes each (a \
         leaf's item digests plus the entries), not with the keyspace.\n"
    );
    b.check(
        "Merkle sync costs what diverges (issue 2/6)",
        "at most about a kilobyte per differing key (a leaf's digests and the entry), whatever the keyspace",
        format!("{lo:.0}–{hi:.0} bytes per differing key"),
        !per_key.is_empty() && hi <= 1200.0,
    );
    let chart = Chart {
        title: format!(
            "Merkle sync: bytes against divergence ({} keys)",
            plot::human(f64::from(keys))
        ),
        command: format!("grapevine sim merkle --keys {keys} --diff D (D = 0, 1, 10 … 10k)"),
        x: axis("differing keys (log scale; 0 drawn at 0.5)", true),
        y: axis("bytes exchanged (log scale)", true),
        series: vec![
            series("Merkle sync", Kind::Measured, 0, pts(p)),
            series("sending every entry", Kind::Theory, 1, full),
        ],
    };
    b.section(md, vec![("merkle".into(), chart)]);
}

pub(super) fn aggregate(lab: &mut Lab, z: &Sizes, b: &mut Builder) {
    let three = z.three();
    let sizes = [three[1], three[2]];
    let mut md = String::from(
        "## Aggregation without a coordinator: push-sum\n\n`grapevine sim aggregate --nodes N \
         --rounds 60` (`lan`: a round every 250 ms): the largest relative error, over the live \
         nodes, of the running average, sum and count.\n\n\
         | N | rounds to 10⁻³ | log2 N + log2 1/ε | datagrams per node per round |\n|---|---|---|---|\n",
    );
    let mut s = Vec::new();
    let mut ok = true;
    let mut reached = Vec::new();
    for (c, &n) in sizes.iter().enumerate() {
        let r = lab.aggregate(&format!("aggregate --nodes {n} --rounds 60"));
        let (rounds, scale) = (
            get(&r, |r| r.rounds_to_epsilon),
            get(&r, |r| r.log2_n_plus_log2_inv_eps),
        );
        ok &= rounds.zip(scale).is_some_and(|(a, b)| a <= 2.0 * b);
        reached.push(format!(
            "{} rounds at N = {}",
            f(rounds, 0),
            int(Some(f64::from(n)))
        ));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            int(Some(f64::from(n))),
            f(rounds, 0),
            f(scale, 1),
            f(get(&r, |r| r.messages_per_node_per_round), 2)
        );
        s.push(series(
            &format!("N = {}", plot::human(f64::from(n))),
            Kind::Measured,
            c,
            errors(&r, |e| {
                [e.average, e.sum, e.count]
                    .into_iter()
                    .filter_map(Figure::figure)
                    .reduce(f64::max)
            }),
        ));
    }
    s.push(series(
        "ε = 10⁻³",
        Kind::Theory,
        7,
        vec![Point::new(1.0, 1e-3), Point::new(60.0, 1e-3)],
    ));
    let ln = three[1];
    let leave = lab.aggregate(&format!(
        "aggregate --nodes {ln} --rounds 160 --leave-at 40"
    ));
    md += "\nSum and count have no estimate until the anchor's unit of mass reaches a node; \
           their first estimates are the spikes, a few rounds in.\n";
    md += &format!(
        "\nThe rounds grow with log2 N + log2 1/ε, as Kempe et al. prove. After 10 % of \
         {} nodes leave at round 40 (`grapevine sim aggregate --nodes {ln} --rounds 160 \
         --leave-at 40`), every remaining node reports the remaining members' aggregates \
         within 10⁻³ after **{}** rounds: the departure ends the epoch, the next one starts \
         from the live members only, and until it has run half its length a node reports the \
         last settled estimate (the plateau).\n",
        int(Some(f64::from(ln))),
        f(get(&leave, |r| r.rounds_to_recover), 0)
    );
    ok &= get(&leave, |r| r.rounds_to_recover).is_some();
    b.check(
        "Push-sum converges (issue 5/6)",
        "error 10⁻³ within twice log2 N + log2 1/ε rounds; recovery after members leave",
        format!(
            "{}; recovery after 10 % left: {} rounds",
            reached.join(", "),
            f(get(&leave, |r| r.rounds_to_recover), 0)
        ),
        ok,
    );
    let chart = Chart {
        title: "Push-sum: largest relative error over the nodes, per round".into(),
        command: format!(
            "grapevine sim aggregate --nodes N --rounds 60 (N = {})",
            list(&sizes)
        ),
        x: axis("round (250 ms each)", false),
        y: axis(
            "largest relative error of average, sum, count (log scale)",
            true,
        ),
        series: s,
    };
    let leave_chart = Chart {
        title: format!(
            "Push-sum when 10 % of {} nodes leave at round 40",
            plot::human(f64::from(ln))
        ),
        command: format!("grapevine sim aggregate --nodes {ln} --rounds 160 --leave-at 40"),
        x: axis("round (250 ms each)", false),
        y: axis(
            "largest relative error of the reported estimate (log scale)",
            true,
        ),
        series: vec![series(
            "reported estimate",
            Kind::Measured,
            0,
            errors(&leave, |e| e.reported.figure()),
        )],
    };
    b.section(
        md,
        vec![
            ("push-sum".into(), chart),
            ("push-sum-leave".into(), leave_chart),
        ],
    );
}

/// One point per round of an aggregate report's `errors`.
pub(super) fn errors(
    r: &Option<AggregateReport>,
    pick: impl Fn(&RoundError) -> Option<f64>,
) -> Vec<Point> {
    r.as_ref()
        .map(|r| {
            r.errors
                .iter()
                .filter_map(|e| {
                    let round = f64::from(e.round);
                    let y = pick(e)?;
                    // Exact answers would vanish from a log scale.
                    Some(Point::new(round, y.max(1e-12)))
                })
                .collect()
        })
        .unwrap_or_default()
}
