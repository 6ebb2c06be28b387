#!/usr/bin/env bash
# Installs what the dashboard's browser test (tests/dashboard.rs) drives Chromium with:
# playwright-core from npm, into DIR/node_modules (default target/dashboard-test). The
# browser itself is Debian's chromium (apt-get install chromium): playwright-core downloads
# none.
set -euo pipefail
dir=${1:-"$(dirname "$0")/../../target/dashboard-test"}
mkdir -p "$dir"
if [ ! -d "$dir/node_modules/playwright-core" ]; then
  (cd "$dir" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --silent playwright-core)
fi
echo "playwright-core in $dir"
