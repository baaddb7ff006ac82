#!/usr/bin/env bash
# Render a desweep MultiQC report in headless Chromium to a PNG (offline).
#
#   scripts/render_report.sh REPORT.html OUT.png [WIDTH] [HEIGHT] [ANCHOR]
#
# WIDTH x HEIGHT is the window (default 1400 x 5000: Chromium captures the
# window; much taller windows render very slowly); ANCHOR (a section id, e.g.
# desweep_verdict) renders only that section, at the top. Needs the Debian package `chromium`
# (apt-get install -y chromium). Exits 1 when the PNG was not written.
set -euo pipefail
report=${1:?usage: render_report.sh REPORT.html OUT.png [WIDTH] [HEIGHT] [ANCHOR]}
out=${2:?usage: render_report.sh REPORT.html OUT.png [WIDTH] [HEIGHT] [ANCHOR]}
width=${3:-1400}
height=${4:-5000}
anchor=${5:-}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z "$browser" ]]; then
    echo "render_report.sh: chromium not found (apt-get install -y chromium)" >&2
    exit 1
fi
[[ -f "$report" ]] || { echo "render_report.sh: $report does not exist" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
page="$report"
if [[ -n "$anchor" ]]; then
    # headless screenshots do not follow #anchors: show only that section (a styled copy; the report is untouched)
    page="$profile/report.html"
    cp "$report" "$page"
    printf '<style>.mqc-module-section{display:none !important}#mqc-module-section-%s{display:block !important}.alert{display:none !important}</style>\n' \
        "$anchor" >> "$page"
fi
url="file://$(cd "$(dirname "$page")" && pwd)/$(basename "$page")"
rm -f "$out"
# --no-sandbox: containers often run as root; the report is a local file
"$browser" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars --disable-quic \
    --no-first-run --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$profile" --virtual-time-budget=20000 --run-all-compositor-stages-before-draw \
    --window-size="$width,$height" --screenshot="$out" "$url" >/dev/null 2>&1 || true
if [[ ! -s "$out" ]]; then
    echo "render_report.sh: no screenshot written" >&2
    exit 1
fi
echo "$out"
