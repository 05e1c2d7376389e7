#!/bin/sh
# Vendors noVNC (MPL-2.0), the VNC client the console page runs (static/console.js imports
# static/novnc/core/rfb.js). vmdeck serves these files itself, built into the binary: no CDN.
#
#   scripts/vendor-novnc.sh
#
# Fetches the npm package @novnc/novnc at the pinned version with `npm pack`, refuses it unless
# its sha512 matches the pinned integrity, and copies into static/novnc/ exactly the ES modules
# core/rfb.js imports (followed transitively: core/ and vendor/pako/ files; no tests, no app/
# UI, no docs), with the licence texts, then writes static/novnc/README.md. To move to another
# release: change VERSION and INTEGRITY (`npm view @novnc/novnc@X dist.integrity`), rerun, read
# the diff, and run the console's browser test (cargo test --test api browser_console).
# Needs npm and node.
set -eu
VERSION="1.7.0"
INTEGRITY="sha512-ucEJOx4T2avIRCleodk7YobZj5O2Ga2AeLfQ69A/yjG9HHba2+PDgwSkN3FttrmG+70ZGx21sElNFouK13RzyA=="
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/static/novnc"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

npm pack --silent "@novnc/novnc@$VERSION" >/dev/null
TARBALL="novnc-novnc-$VERSION.tgz"
GOT="sha512-$(openssl dgst -sha512 -binary "$TARBALL" | base64 -w0)"
if [ "$GOT" != "$INTEGRITY" ]; then
  echo "vendor-novnc: $TARBALL has integrity $GOT, pinned is $INTEGRITY: refusing it" >&2
  exit 1
fi
tar -xzf "$TARBALL"

# The import closure of core/rfb.js: every relative `import … from "x"` / `export … from "x"`
# / `import "x"`, followed file by file. A dynamic import() would not be followed: refuse one.
if grep -rqE '\bimport\s*\(' package/core package/vendor; then
  echo "vendor-novnc: a dynamic import() appeared in noVNC: check what it loads" >&2
  exit 1
fi
node - package core/rfb.js >files.txt <<'EOF'
const fs = require("fs"), path = require("path");
const [root, start] = process.argv.slice(2);
const seen = new Set(), todo = [start];
const re = /(?:\bimport|\bexport)\s+(?:[^'";]*?\s+from\s+)?["']([^"']+)["']/g;
while (todo.length) {
  const file = todo.pop();
  if (seen.has(file)) continue;
  seen.add(file);
  const text = fs.readFileSync(path.join(root, file), "utf8");
  for (const m of text.matchAll(re)) {
    if (!m[1].startsWith(".")) throw new Error(`${file} imports a bare specifier ${m[1]}`);
    todo.push(path.posix.normalize(path.posix.join(path.posix.dirname(file), m[1])));
  }
}
console.log([...seen].sort().join("\n"));
EOF

rm -rf "$DEST"
mkdir -p "$DEST/docs"
while read -r f; do
  mkdir -p "$DEST/$(dirname "$f")"
  cp "package/$f" "$DEST/$f"
done <files.txt
cp package/LICENSE.txt package/AUTHORS "$DEST/"
cp package/docs/LICENSE.MPL-2.0 package/docs/LICENSE.BSD-2-Clause \
   package/docs/LICENSE.BSD-3-Clause "$DEST/docs/"
cp package/vendor/pako/LICENSE "$DEST/vendor/pako/LICENSE"

COUNT="$(wc -l <files.txt)"
cat >"$DEST/README.md" <<EOF
# noVNC $VERSION (vendored)

The VNC client of vmdeck's console page (\`static/console.js\` imports \`core/rfb.js\`).

- Package: \`@novnc/novnc@$VERSION\` from the npm registry (https://www.npmjs.com/package/@novnc/novnc),
  upstream https://github.com/novnc/noVNC
- Integrity of the tarball: \`$INTEGRITY\` (checked before anything was copied)
- Vendored on: $(date -u +%Y-%m-%d)
- Licence: MPL-2.0 for the core library (\`LICENSE.txt\`, \`docs/LICENSE.MPL-2.0\`); pako is MIT
  (\`vendor/pako/LICENSE\`); see \`LICENSE.txt\` for the other parts' licences.
- What is here: the $COUNT ES modules \`core/rfb.js\` imports, directly or not (found by following
  their \`import … from\` lines), unchanged; nothing else of the package (no tests, no \`app/\` UI).

Do not edit these files. To redo or update: change \`VERSION\` and \`INTEGRITY\` in
\`scripts/vendor-novnc.sh\`, run it (it needs npm and node), review the diff, and run
\`cargo test --test api browser_console\` (a real VM's screen in headless Chromium).
EOF
echo "vendor-novnc: noVNC $VERSION, $COUNT modules into $DEST"
