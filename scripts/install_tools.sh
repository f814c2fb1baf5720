#!/usr/bin/env bash
# Install promtool (Prometheus's rule checker, from Debian's `prometheus` package) once into
# .cache/tools/bin, for the tests of the alert rules in deploy/monitoring. No root needed: the
# package is downloaded and unpacked, not installed. Where apt cannot fetch it (no Debian, no
# registry), .cache/tools/UNAVAILABLE says why and those tests skip naming it.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=.cache/tools
[ -x "$DIR/bin/promtool" ] && exit 0
mkdir -p "$DIR/bin"
rm -f "$DIR/UNAVAILABLE"
unavailable() {
  echo "tools: $1" | tee "$DIR/UNAVAILABLE" >&2
  exit 0
}
command -v apt-get >/dev/null 2>&1 || unavailable "apt-get is not there to fetch promtool (Debian's prometheus package)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "tools: fetching promtool (Debian package prometheus) into $DIR"
(cd "$work" && apt-get download -q prometheus >/dev/null 2>&1) || unavailable "apt-get could not download the prometheus package"
dpkg-deb -x "$work"/prometheus_*.deb "$work/x" || exit 1
cp "$work/x/usr/bin/promtool" "$DIR/bin/promtool"
"$DIR/bin/promtool" --version >/dev/null || exit 1
echo "tools: done"
