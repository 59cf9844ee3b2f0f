#!/usr/bin/env bash
# Builds the editor-form harness (tests/form: React 18, RJSF 6, Ajv2020, bundled by esbuild) that
# tests/test_editor_form_browser.py drives in Chromium. Installs exactly package-lock.json with
# `npm ci` into a directory outside the work tree (default: a new temporary one), so nothing
# lands in the checkout. Idempotent: a directory already built from the same sources is reused.
# Prints the variable the tests read:  QUICKBOT_FORM_HARNESS=<dir>
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source_dir="$repo/tests/form"
target=${1:-$(mktemp -d "${TMPDIR:-/tmp}/quickbot-form-harness.XXXXXX")}

if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "form-deps: npm is missing (apt-get install nodejs npm)" >&2
        exit 1
    fi
fi

mkdir -p "$target"
stamp=$(cat "$source_dir/package-lock.json" "$source_dir/harness.jsx" "$source_dir/index.html" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$target/.built-from" 2>/dev/null)" != "$stamp" ] || [ ! -f "$target/dist/harness.js" ]; then
    cp "$source_dir/package.json" "$source_dir/package-lock.json" "$source_dir/harness.jsx" "$source_dir/index.html" "$target/"
    (cd "$target" && npm ci --no-audit --no-fund --loglevel=error >&2 && npm run --silent build >&2)
    echo "$stamp" >"$target/.built-from"
fi
echo "QUICKBOT_FORM_HARNESS=$target"
