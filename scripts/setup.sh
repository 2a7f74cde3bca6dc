#!/usr/bin/env bash
# One-time (idempotent) set-up: a virtual environment at .venv with the pinned torch pair, the package with
# every extra (all + test), timm's own model tests (from timm's source distribution, for tests/test_timm_contract.py),
# and Debian's chromium for the browser tests of `ran app` (tests/test_app.py, driven through playwright).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
step() { echo "setup: $*" >&2; }
step "a first run downloads about 3 GB and fills .venv with about 7 GB (torch's CUDA wheels, also on a" \
  "machine without a GPU); it takes 2-5 minutes on a fast connection, seconds once installed"
if [[ ! -x .venv/bin/python ]]; then
  step "1/4 creating the virtual environment .venv"
  "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
step "2/4 installing torch==2.14.1 and torchvision==0.29.1 (the largest step)"
pip install torch==2.14.1 torchvision==0.29.1
step "3/4 installing ran with every extra and the test tools"
pip install -e '.[dev]'
step "4/4 timm's model tests and chromium (for the browser tests)"
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
step "done: .venv holds $(du -sh .venv 2>/dev/null | cut -f1)"
