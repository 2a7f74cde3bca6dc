#!/usr/bin/env bash
# One-time (idempotent) set-up: a virtual environment at .venv with the pinned torch pair, the package with
# every extra (all + test), and timm's own model tests (from timm's source distribution, for tests/test_timm_contract.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install torch==2.14.1 torchvision==0.29.1
pip install -e '.[dev]'
timm_version=$(.venv/bin/python -c 'import timm; print(timm.__version__)')
dest=.cache/timm-tests/$timm_version
if [[ ! -f $dest/tests/test_models.py ]]; then
  tmp=$(mktemp -d)
  pip download --no-deps --no-binary :all: "timm==$timm_version" -d "$tmp"
  mkdir -p "$dest.tmp"
  tar -xzf "$tmp"/timm-*.tar.gz -C "$dest.tmp" --strip-components=1 --wildcards '*/tests/*'
  rm -rf "$dest" && mv "$dest.tmp" "$dest" && rm -rf "$tmp"
fi
