#!/usr/bin/env bash
# Installs the real Consul clients the compatibility suite runs (tests/consul_clients.rs),
# each in its own place since the three Python ones share the module name `consul`:
#   DIR/python-consul, DIR/python-consul2, DIR/py-consul   (virtual environments, PyPI)
#   DIR/npm/node_modules/consul                            (npm)
# Usage: scripts/consul-clients/setup.sh [DIR]   (default: target/consul-clients)
set -euo pipefail
dir=${1:-"$(dirname "$0")/../../target/consul-clients"}
mkdir -p "$dir"
for pkg in python-consul python-consul2 py-consul; do
  if [ ! -x "$dir/$pkg/bin/python" ] || ! "$dir/$pkg/bin/python" -c 'import consul' 2>/dev/null; then
    python3 -m venv "$dir/$pkg"
    "$dir/$pkg/bin/pip" install --quiet "$pkg"
  fi
done
if [ ! -d "$dir/npm/node_modules/consul" ]; then
  mkdir -p "$dir/npm"
  (cd "$dir/npm" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --silent consul)
fi
echo "Consul clients in $dir"
