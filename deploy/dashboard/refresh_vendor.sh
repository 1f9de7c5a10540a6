#!/usr/bin/env bash
# Refresh the charting library the dashboard ships (api/dashboard/vendor/chart.js/) from the npm
# registry: `npm pack` the pinned version, copy its UMD build and licence, record the checksum.
# Usage: bash deploy/dashboard/refresh_vendor.sh [VERSION]   (default: the version in PINNED)
# Run it by hand when upgrading; installing meterline never runs it (the files are in the package).
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=api/dashboard/vendor/chart.js
pinned=$(awk '$1 == "version" {print $2}' "$dest/PINNED")
version="${1:-$pinned}"
command -v npm >/dev/null 2>&1 || { echo "refresh_vendor: npm is needed (apt-get install npm)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# npm pack checks the tarball against the registry's integrity hash before writing it.
(cd "$work" && npm pack --silent "chart.js@$version" >/dev/null)
tar -xzf "$work"/chart.js-"$version".tgz -C "$work"
head -c 200 "$work/package/dist/chart.umd.min.js" | grep -q "Chart.js v$version" \
  || { echo "refresh_vendor: the tarball's build does not say Chart.js v$version" >&2; exit 1; }
cp "$work/package/dist/chart.umd.min.js" "$dest/chart.umd.min.js"
cp "$work/package/LICENSE.md" "$dest/LICENSE.md"
sum=$(sha256sum "$dest/chart.umd.min.js" | cut -d' ' -f1)
cat >"$dest/PINNED" <<PIN
# The charting library vendored for the dashboard; refreshed by deploy/dashboard/refresh_vendor.sh
package chart.js
version $version
file chart.umd.min.js
sha256 $sum
licence MIT (LICENSE.md beside this file)
PIN
echo "refresh_vendor: chart.js $version -> $dest (sha256 $sum)"
