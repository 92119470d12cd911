#!/usr/bin/env bash
# The console journeys (tests/console) drive Debian's Chromium through Playwright. Playwright never
# downloads a browser here (`playwright install` is never run): this installs the system package
# when it is missing. Idempotent and quick when Chromium is already there.
set -euo pipefail
CHROMIUM="${RAVEN_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "ensure_chromium: $CHROMIUM is missing; install Debian's chromium package (sudo apt-get install -y chromium)" >&2
  exit 1
fi
echo "ensure_chromium: installing Debian's chromium package (for the console's browser tests)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
test -x "$CHROMIUM"
