#!/usr/bin/env bash
# Builds the self-contained fanout WordPress plugin: the plugin folder plus copies of the
# fanout PHP library (clients/php/src -> lib/) and JS client (clients/js/src ->
# assets/js/fanout/), so that the plugin runs without this repository.
#
#   integrations/wordpress/build.sh                 dist/fanout/ (and dist/fanout.zip if `zip` is installed)
#   integrations/wordpress/build.sh --out DIR       DIR/fanout/
#   integrations/wordpress/build.sh --dev           no copy: symlinks lib/ and assets/js/fanout/
#                                                   inside the repository's plugin folder, for
#                                                   development (both are gitignored)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
plugin_src="$here/fanout"
php_lib="$repo/clients/php/src"
js_client="$repo/clients/js/src"

out="$here/dist"
dev=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --dev) dev=1; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

for dir in "$php_lib" "$js_client"; do
  [ -d "$dir" ] || { echo "build.sh: $dir is missing" >&2; exit 1; }
done
[ -f "$js_client/index.js" ] || { echo "build.sh: $js_client/index.js is missing" >&2; exit 1; }

if [ "$dev" -eq 1 ]; then
  ln -sfn "$php_lib" "$plugin_src/lib"
  ln -sfn "$js_client" "$plugin_src/assets/js/fanout"
  echo "development links: $plugin_src/lib, $plugin_src/assets/js/fanout"
  exit 0
fi

mkdir -p "$out"
target="$out/fanout"
rm -rf "$target"
# The plugin's own files, without development links that --dev may have left.
mkdir -p "$target"
(cd "$plugin_src" && tar --exclude=./lib --exclude=./assets/js/fanout -cf - .) | (cd "$target" && tar -xf -)
cp -R "$php_lib" "$target/lib"
cp -R "$js_client" "$target/assets/js/fanout"
echo "built $target"

if command -v zip >/dev/null 2>&1; then
  rm -f "$out/fanout.zip"
  (cd "$out" && zip -qr fanout.zip fanout)
  echo "built $out/fanout.zip"
fi
