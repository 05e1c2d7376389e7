#!/bin/sh
# Vendors axe-core (MPL-2.0), the accessibility checker the browser tests inject into each page
# (tests/api/browser_a11y.rs). A test asset only: vmdeck never serves it.
#
#   scripts/vendor-axe.sh [VERSION]     (default: the pinned version below)
#
# Fetches the npm package with `npm pack`, copies axe.min.js and LICENSE into
# tests/vendor/axe-core/ and prints their sha256 for tests/vendor/axe-core/README.md.
set -eu
VERSION="${1:-4.14.1}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/tests/vendor/axe-core"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
npm pack --silent "axe-core@$VERSION" >/dev/null
tar -xzf "axe-core-$VERSION.tgz"
mkdir -p "$DEST"
cp package/axe.min.js package/LICENSE "$DEST/"
cd "$DEST"
echo "axe-core $VERSION"
sha256sum axe.min.js LICENSE
