#!/usr/bin/env bash
# Renders a run's report.html in headless Chromium (Debian's `chromium` package) and checks the picture is a real
# page: not blank, with pictures. Not part of `make test` (a fresh CI machine has no Chromium); run it by hand:
#
#   scripts/report_screenshot.sh RUN_DIR [OUT_PNG]      e.g. scripts/report_screenshot.sh runs/demo
#
# Exits non-zero naming what is wrong (no report, no Chromium, a blank or nearly blank render). Bounded: Chromium
# gets 60 s.
set -euo pipefail
RUN=${1:?usage: scripts/report_screenshot.sh RUN_DIR [OUT_PNG]}
OUT=${2:-$RUN/report-screenshot.png}
HTML=$(cd "$RUN" && pwd)/report.html
[[ -f $HTML ]] || { echo "no report.html in $RUN" >&2; exit 1; }
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[[ -n $CHROME ]] || { echo "no Chromium found (apt-get install chromium)" >&2; exit 1; }
PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
timeout 60 "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$PROFILE" \
    --window-size=1280,4000 --screenshot="$OUT" "file://$HTML" >/dev/null 2>&1
[[ -s $OUT ]] || { echo "Chromium wrote no screenshot" >&2; exit 1; }
python3 - "$OUT" <<'PY'
import struct, sys, zlib
path = sys.argv[1]
data = open(path, "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, width, height, ctype = 8, b"", 0, 0, 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert depth == 8, f"bit depth {depth}"
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
channels = {2: 3, 6: 4}[ctype]
raw, stride = zlib.decompress(idat), width * channels
rows, prev = [], bytearray(stride)
for y in range(height):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - channels] if i >= channels else 0
        b, c = prev[i], prev[i - channels] if i >= channels else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(line); prev = line
inked = colourful = 0
for line in rows:
    for x in range(0, stride, channels):
        r, g, b = line[x], line[x + 1], line[x + 2]
        inked += (r + g + b) < 600
        colourful += max(r, g, b) - min(r, g, b) > 40
total = width * height
print(f"{path}: {width}x{height}, {100 * inked / total:.1f} % inked, {100 * colourful / total:.1f} % colourful pixels")
assert inked / total > 0.005, "the page is (nearly) blank"
assert colourful / total > 0.0005, "no pictures (plots, sample grids) on the page"
PY
