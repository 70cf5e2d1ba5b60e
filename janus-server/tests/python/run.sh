#!/usr/bin/env bash
# Python tests of janus-server: the real binary with the `openai` client and, in Debian's
# chromium through playwright, the web page. Creates its virtual environment under target/.
set -euo pipefail
cd "$(dirname "$0")/../../.."
venv="${JANUS_SERVER_VENV:-target/server-venv}"
if [ ! -x "$venv/bin/pytest" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet openai pytest playwright pillow
fi
# The same target set as the Rust tests, so features unify the same way and nothing rebuilds.
cargo build --workspace --release --all-targets
status=0
"$venv/bin/pytest" -v janus-server/tests/python "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no test" >&2
    exit 1
fi
exit "$status"
