#!/usr/bin/env bash
# One-time (idempotent) set-up: a virtual environment at .venv with the pinned torch pair, the package with
# every extra (all + test), timm's own model tests (from timm's source distribution, for tests/test_timm_contract.py),
# and Debian's chromium for the browser tests of `ran app` (tests/test_app.py, driven through playwright).
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

# Playwright's own browser download is not used: the tests drive the system's chromium.
if [[ ! -x /usr/bin/chromium ]] && ! command -v chromium >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } ||
      echo "setup: apt-get could not install chromium; the browser tests of ran app will be skipped" >&2
  else
    echo "setup: chromium is missing and installing it needs root (apt-get install -y chromium); the" \
      "browser tests of ran app (tests/test_app.py) will be skipped" >&2
  fi
fi
