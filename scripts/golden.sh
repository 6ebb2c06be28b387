#!/usr/bin/env bash
# Runs a fixed set of deterministic simulations and prints one checksum per run.
# Used to prove that a refactoring changes no behaviour: run it before and after,
# and the two outputs must be byte-identical.
#   scripts/golden.sh [binary] [outdir]
set -euo pipefail
bin=${1:-./target/release/grapevine}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
run() {
    local name=$1; shift
    "$bin" sim "$@" --json --no-wall-clock >"$out/$name.json"
    printf '%s  %s\n' "$(sha256sum <"$out/$name.json" | cut -c1-16)" "$name"
}
run swim-100-s1 swim --nodes 100 --seed 1 --periods 60
run swim-200-crash-s2 swim --nodes 200 --seed 2 --crash 5 --loss 0.05 --periods 80
run swim-100-part-s3 swim --nodes 100 --seed 3 --partition-at 20 --heal-at 50 --periods 90
run swim-100-slow-s4 swim --nodes 100 --seed 4 --slow 0.1 --loss 0.1 --periods 60
run swim-100-phi-s5 swim --nodes 100 --seed 5 --detector phi --crash 3 --periods 60
run state-100-s1 state --nodes 100 --seed 1
run state-300-s2 state --nodes 300 --seed 2
run rumor-200-s1 rumor --nodes 200 --seed 1
run rumor-500-s2 rumor --nodes 500 --seed 2
run aggregate-100-s1 aggregate --nodes 100 --seed 1
run aggregate-300-s2 aggregate --nodes 300 --seed 2
run spread-1000-s1 spread --nodes 1000 --seed 1
run spread-10000-s2 spread --nodes 10000 --seed 2
run idle-100-s1 idle --nodes 100 --seed 1
run idle-200-nostate-s2 idle --nodes 200 --seed 2 --no-own-state
if [ -z "${GOLDEN_NO_REPORT:-}" ]; then
    "$bin" sim report --quick --out "$out/report" >/dev/null
    (cd "$out/report" && find . -type f | sort | while read -r f; do
        printf '%s  report-quick/%s\n' "$(sha256sum <"$f" | cut -c1-16)" "${f#./}"
    done)
fi
