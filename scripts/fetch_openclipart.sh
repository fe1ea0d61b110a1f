#!/usr/bin/env bash
# Fetches Debian's openclipart-png and openclipart-svg packages and unpacks them into
# data/openclipart (no root install: apt-get download + dpkg -x). Public domain clip art,
# about 8,000 drawings with title, creator, keywords and licence in each SVG.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=data/openclipart
if [ -d "$DEST/usr/share/openclipart/png" ]; then
    exit 0
fi
mkdir -p data/debs "$DEST"
(
    cd data/debs
    if ! apt-get download openclipart-png openclipart-svg 2>/dev/null; then
        echo "fetch: refreshing the package lists" >&2
        if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
        apt-get download openclipart-png openclipart-svg
    fi
)
for deb in data/debs/openclipart-*.deb; do
    dpkg -x "$deb" "$DEST"
done
rm -rf data/debs
echo "fetch: Openclipart unpacked into $DEST/usr/share/openclipart"
