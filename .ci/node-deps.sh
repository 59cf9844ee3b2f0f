#!/usr/bin/env bash
# Installs the pinned Node clients (tests/node/package-lock.json) that tests/test_collector_node.py
# drives against the embedded collector: Segment's own analytics-node, whose burst behaviour
# (many parallel connections) is what the collector's connection limits are sized for.
# Idempotent: `npm ci` only when the installed tree does not match the lock file.
# Prints the variable the tests read.
set -euo pipefail
cd "$(dirname "$0")/../tests/node"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node-deps: node and npm are not installed; the Node client tests will be skipped." >&2
    exit 0
fi
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
    npm ci --no-audit --no-fund --loglevel=error >&2
fi
echo "QUICKBOT_TEST_NODE_MODULES=$(pwd)/node_modules"
