#!/usr/bin/env bash
# End-to-end installer smoke test (called by .ci/run): a real CPU-mode install of this checkout into a temporary
# prefix, then the installed commands. torch comes from pip's configured index (here: the local torch==2.13.0 CPU
# wheel) instead of download.pytorch.org. About 4 minutes for the install on a busy 2-core machine (most of it pip
# unpacking torch and PySide6) plus the demo generation; SANA_SMOKE_SECONDS sets the demo length (default 5).
# Set SANA_SMOKE_KEEP=1 to keep the temporary folder for inspection.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/sana-smoke.XXXXXX")"
cleanup() {
    if [[ "${SANA_SMOKE_KEEP:-0}" == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
prefix="$work/env"
started=$SECONDS
# the app's own folders (demo pack, caches) also stay inside the temporary folder; no network for the hub
export XDG_DATA_HOME="$work/share" XDG_CACHE_HOME="$work/cache" HF_HUB_OFFLINE=1

# launchers go into the temporary folder too, never into the real ~/.local
bash "$repo/installer/install.sh" --prefix "$prefix" --source "$repo" --dev \
    --torch-build cpu --torch-spec "torch==2.13.0" --torch-index default --bin-dir "$work/bin"

echo "== installed files"
test -x "$prefix/bin/python"
test -f "$work/share/applications/sana-video-studio.desktop"
test -x "$work/bin/sana-video-studio"

echo "== import core"
"$prefix/bin/python" -c "import core, torch; print('core', core.__version__, 'torch', torch.__version__)"

echo "== sana-video --help"
"$prefix/bin/sana-video" --help
"$work/bin/sana-video" --help >/dev/null   # the ~/.local/bin wrapper reaches the same command
echo "== sana-video doctor --json"
"$prefix/bin/sana-video" doctor --json >"$work/doctor.json" || true   # problems (no GPU) are not a failure
"$prefix/bin/python" -c "import json, sys; r = json.load(open(sys.argv[1])); print('doctor precision:', r['precision']['choice'])" "$work/doctor.json"
echo "== sana-video generate --demo"
demo_started=$SECONDS
(cd "$work" && "$prefix/bin/sana-video" generate --demo --prompt "a red ball rolls on a wooden floor" \
    --seconds "${SANA_SMOKE_SECONDS:-5}" --output "$work/demo.mp4" -q)
"$prefix/bin/python" - "$work/demo.mp4" <<'PY'
import sys, av
with av.open(sys.argv[1]) as c:
    s = c.streams.video[0]
    n = sum(1 for _ in c.decode(s))
    assert s.codec_context.name == "h264" and n == 81, (s.codec_context.name, n)
    print(f"demo.mp4: h264 {s.codec_context.width}x{s.codec_context.height}, {n} frames")
PY
echo "(generate --demo took $((SECONDS - demo_started)) s)"
echo "== the test suite from the installed environment"
# run outside the checkout so that `core`, `app`, `quant` come from the installed package, not the source tree
(cd "$work" && QT_QPA_PLATFORM=offscreen "$prefix/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests")
echo "== re-run repairs in place"
bash "$repo/installer/install.sh" --prefix "$prefix" --source "$repo" \
    --torch-build cpu --torch-spec "torch==2.13.0" --torch-index default --bin-dir "$work/bin" --no-launchers >/dev/null
"$prefix/bin/python" -c "import core"

echo "== uninstall"
bash "$repo/installer/install.sh" --prefix "$prefix" --bin-dir "$work/bin" --uninstall
test ! -e "$prefix/bin" && test ! -e "$work/bin/sana-video-studio" && test ! -e "$work/share/applications/sana-video-studio.desktop"

echo "installer smoke OK in $((SECONDS - started)) s"
