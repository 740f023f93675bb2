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
#   integrations/wordpress/build.sh --version V     build as version V (default: fanout.php's),
#                                                   e.g. a pre-release 0.2.1-rc.1
#
# Every relative import of the built scripts gets `?ver=<version>` (the entry script gets it
# from WordPress), so that after an update a browser loads every module anew and never mixes
# new files with cached old ones.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
plugin_src="$here/fanout"
php_lib="$repo/clients/php/src"
js_client="$repo/clients/js/src"

out="$here/dist"
dev=0
version=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --dev) dev=1; shift ;;
    --version) version="${2:?--version needs a version}"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
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
rm -f "$target/assets/js/fanout/"*.d.ts

current="$(sed -n "s/^const FANOUT_WP_VERSION = '\(.*\)';$/\1/p" "$target/fanout.php")"
[ -n "$current" ] || { echo "build.sh: no FANOUT_WP_VERSION in fanout.php" >&2; exit 1; }
version="${version:-$current}"
case "$version" in
  *[!A-Za-z0-9.+-]*|"") echo "build.sh: version must be letters, digits and . + -: $version" >&2; exit 2 ;;
esac
if [ "$version" != "$current" ]; then
  sed -i -e "s/^const FANOUT_WP_VERSION = '.*';$/const FANOUT_WP_VERSION = '$version';/" \
    -e "s/^\( \* Version: *\).*$/\1$version/" "$target/fanout.php"
fi
# import ... from './x.js', export ... from '../x.js', import './x.js', import('./x.js'):
# relative module URLs get ?ver=<version>.
find "$target/assets/js" -name '*.js' -print0 | xargs -0 sed -i -E \
  "s#((from|import)[[:space:]]*\(?[[:space:]]*)(['\"])(\.{1,2}/[^'\"?]+\.js)\3#\1\3\4?ver=$version\3#g"
if grep -rnE "(from|import)[[:space:]]*\(?[[:space:]]*['\"]\.{1,2}/[^'\"?]+\.js['\"]" "$target/assets/js"; then
  echo "build.sh: the imports above were left without ?ver=" >&2
  exit 1
fi
echo "built $target (version $version)"

if command -v zip >/dev/null 2>&1; then
  rm -f "$out/fanout.zip"
  (cd "$out" && zip -qr fanout.zip fanout)
  echo "built $out/fanout.zip"
fi
