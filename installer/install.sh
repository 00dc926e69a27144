#!/usr/bin/env bash
# SANA-Video Studio installer for Linux.
#
# One command: creates an isolated Python environment (venv) in a prefix, picks the PyTorch build that has kernels
# for this machine's NVIDIA GPU (or the CPU build), installs the app with pinned dependency versions, and adds a
# desktop entry plus `sana-video-studio` / `sana-video` wrappers in ~/.local/bin. Re-running repairs or upgrades the
# same prefix in place.
#
#   installer/install.sh [--prefix DIR] [--dev] [--dry-run] [--uninstall] [--torch-build B] [--torch-spec S]
#                        [--torch-index URL|default] [--source DIR|WHEEL] [--python PY] [--bin-dir DIR] [--no-launchers]
#
# `source installer/install.sh --source-only` defines the functions without running anything (used by the tests).

# ---------------------------------------------------------------------------------------------------------------------
# GPU -> PyTorch build table. First row whose compute-capability range contains the GPU and whose minimum driver the
# installed driver meets wins; no row -> the CPU build. Mirrored in install.ps1 (tests/test_installer.py parses both
# and checks they are equal). Sources: PyTorch RELEASE.md compatibility matrix (torch 2.12-2.14 ship CUDA 12.6 and 13.0;
# 12.6 has sm_50..sm_90, 13.0 has sm_75..sm_120; 2.11 is the last release with a CUDA 12.8 build) and the CUDA
# toolkit release notes (minimum drivers: CUDA 13.x >= 580.65 Linux / 580.88 Windows; CUDA 12.8 >= 570.26 / 570.65;
# CUDA 12.x minor-version compatibility >= 525.60 / 528.33).
# Columns: min_cc|max_cc|build|torch_version|min_driver_linux|min_driver_windows|why
# BEGIN TORCH BUILD TABLE
TORCH_BUILD_TABLE='10.0|99.9|cu130|2.13.0|580.65|580.88|Blackwell (sm_100 B200, sm_120 RTX 50) has kernels only in CUDA 12.8+ builds; torch 2.13 ships them as cu130
10.0|99.9|cu128|2.11.0|570.26|570.65|Blackwell on a 570-579 driver: CUDA 13 needs driver 580+, torch 2.11 is the newest CUDA 12.8 build (update the driver and re-run to get torch 2.13)
7.5|9.9|cu130|2.13.0|580.65|580.88|Turing/Ampere/Ada/Hopper on a CUDA 13 driver: the same cu130 build as Blackwell
5.0|9.9|cu126|2.13.0|525.60|528.33|cu126 has kernels for sm_50..sm_90 and runs on any CUDA 12 driver (cu130 needs driver 580+ and dropped Maxwell/Pascal/Volta)'
# END TORCH BUILD TABLE

TORCH_DEFAULT_VERSION="2.13.0"
TORCH_INDEX_BASE="https://download.pytorch.org/whl"
APP_NAME="sana-video-studio"
INSTALL_MARKER="sana-video-studio-install.txt"   # written into the prefix; --uninstall only deletes prefixes with it
LAUNCHER_TAG="# sana-video-studio launcher"      # first comment line of the wrappers we write

log() { printf '%s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# "12.0" -> 120, "8.9" -> 89: integer compute capability for range tests. Empty output for anything else.
cc_to_int() {
    local cc="$1"
    [[ "$cc" =~ ^([0-9]+)\.([0-9])$ ]] || return 1
    printf '%d\n' "$((10#${BASH_REMATCH[1]} * 10 + 10#${BASH_REMATCH[2]}))"
}

# version_ge A B: true when dotted version A >= B (numeric per component, missing components are 0).
version_ge() {
    local IFS=.
    local -a a=($1) b=($2)
    local i x y
    for ((i = 0; i < ${#a[@]} || i < ${#b[@]}; i++)); do
        x="${a[i]:-0}"; y="${b[i]:-0}"
        [[ "$x" =~ ^[0-9]+$ && "$y" =~ ^[0-9]+$ ]] || return 1
        ((10#$x > 10#$y)) && return 0
        ((10#$x < 10#$y)) && return 1
    done
    return 0
}

# Runs nvidia-smi and prints its CSV lines ("name, compute_cap, driver_version"). Returns 1 when nvidia-smi is missing;
# a failing nvidia-smi still prints what it said, so choose_torch_build can report it as a broken output.
query_gpus() {
    local smi
    smi="$(command -v nvidia-smi 2>/dev/null)" || smi=""
    # WSL2 ships nvidia-smi outside PATH
    [[ -z "$smi" && -x /usr/lib/wsl/lib/nvidia-smi && -z "${SANA_NO_WSL_SMI:-}" ]] && smi=/usr/lib/wsl/lib/nvidia-smi
    [[ -n "$smi" ]] || return 1
    local -a limit=()
    command -v timeout >/dev/null 2>&1 && limit=(timeout 30)   # a wedged driver can hang nvidia-smi
    "${limit[@]}" "$smi" --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>&1 || true
}

# choose_torch_build "<nvidia-smi CSV lines>" [linux|windows]
# Prints one line: build|torch_version|gpu_name|compute_cap|driver|why   (build is cpu, cu126, cu128 or cu130).
# With several GPUs it chooses for the newest one (highest compute capability): that is the card the app should use,
# and every build in the table that covers it also covers older cards of the same generation range.
choose_torch_build() {
    local smi_output="$1" os="${2:-linux}"
    local line name cc driver cc_int best_int=-1 best_name="" best_cc="" best_driver="" bad_line="" n_gpus=0
    while IFS= read -r line; do
        line="${line%$'\r'}"
        [[ -z "${line//[[:space:]]/}" ]] && continue
        IFS=',' read -r name cc driver _ <<<"$line"
        name="$(echo "$name" | sed 's/^[[:space:]]*//;s/[[:space:]]*$//')"
        cc="${cc//[[:space:]]/}"
        driver="${driver//[[:space:]]/}"
        if ! cc_int="$(cc_to_int "$cc")" || [[ ! "$driver" =~ ^[0-9]+(\.[0-9]+)*$ ]] || [[ -z "$name" ]]; then
            [[ -z "$bad_line" ]] && bad_line="$line"
            continue
        fi
        n_gpus=$((n_gpus + 1))
        if ((cc_int > best_int)); then
            best_int=$cc_int; best_name="$name"; best_cc="$cc"; best_driver="$driver"
        fi
    done <<<"$smi_output"

    if ((n_gpus == 0)); then
        if [[ -n "$bad_line" ]]; then
            printf 'cpu|%s||||nvidia-smi output not understood (%s): installing the CPU build; fix the NVIDIA driver and re-run, or force a build with --torch-build\n' \
                "$TORCH_DEFAULT_VERSION" "$(printf '%s' "$bad_line" | cut -c1-120 | tr '|' '/')"
        else
            printf 'cpu|%s||||no NVIDIA GPU found (nvidia-smi missing or listed no GPU): CPU build, demo mode only\n' \
                "$TORCH_DEFAULT_VERSION"
        fi
        return 0
    fi

    local more=""
    ((n_gpus > 1)) && more=" ($n_gpus GPUs; chose for the newest)"
    local row min_cc max_cc build torch_version drv_linux drv_windows why min_driver lo hi
    while IFS= read -r row; do
        [[ -z "$row" ]] && continue
        IFS='|' read -r min_cc max_cc build torch_version drv_linux drv_windows why <<<"$row"
        lo="$(cc_to_int "$min_cc")"; hi="$(cc_to_int "$max_cc")"
        if [[ "$os" == windows ]]; then min_driver="$drv_windows"; else min_driver="$drv_linux"; fi
        if ((best_int >= lo && best_int <= hi)) && version_ge "$best_driver" "$min_driver"; then
            printf '%s|%s|%s|%s|%s|%s%s\n' "$build" "$torch_version" "$best_name" "$best_cc" "$best_driver" "$why" "$more"
            return 0
        fi
    done <<<"$TORCH_BUILD_TABLE"

    local why_cpu
    if ((best_int < 50)); then
        why_cpu="compute capability $best_cc is older than any CUDA build of PyTorch supports (5.0+): CPU build, demo mode only"
    else
        why_cpu="driver $best_driver is too old for any CUDA build that has kernels for sm_${best_int}: CPU build for now; update the NVIDIA driver (580+ recommended) and re-run this installer"
    fi
    printf 'cpu|%s|%s|%s|%s|%s%s\n' "$TORCH_DEFAULT_VERSION" "$best_name" "$best_cc" "$best_driver" "$why_cpu" "$more"
}

# Index URL of a build ("default" means pip's configured index: no --index-url).
torch_index_for() {
    case "$1" in
        cpu | cu*) printf '%s/%s\n' "$TORCH_INDEX_BASE" "$1" ;;
        *) printf 'default\n' ;;
    esac
}

# Torch version of the table row for a forced build (--torch-build cu128 -> 2.11.0).
torch_version_for_build() {
    local row build torch_version
    while IFS= read -r row; do
        IFS='|' read -r _ _ build torch_version _ <<<"$row"
        if [[ "$build" == "$1" ]]; then printf '%s\n' "$torch_version"; return 0; fi
    done <<<"$TORCH_BUILD_TABLE"
    printf '%s\n' "$TORCH_DEFAULT_VERSION"
}

# A Python >= 3.10 with the venv module. Prints its path.
find_python() {
    local candidate
    for candidate in "$@" python3.13 python3.12 python3.11 python3.10 python3 python; do
        [[ -z "$candidate" ]] && continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1
        then
            "$candidate" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

# The checkout this script lives in, when it is one (installer/ next to pyproject.toml).
default_source() {
    local here root
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    root="$(dirname "$here")"
    if [[ -f "$root/pyproject.toml" ]] && grep -q "name = \"$APP_NAME\"" "$root/pyproject.toml"; then
        printf '%s\n' "$root"
    fi
}

# run CMD...: executes, or only prints under --dry-run.
run() {
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        printf 'would run:'; printf ' %q' "$@"; printf '\n'
    else
        printf '+'; printf ' %q' "$@"; printf '\n'
        "$@"
    fi
}

# write_file PATH MODE: stdin -> PATH atomically (temporary file in the same folder, then rename).
write_file() {
    local path="$1" mode="$2" tmp
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        log "would write: $path"
        cat >/dev/null
        return 0
    fi
    mkdir -p "$(dirname "$path")"
    tmp="$(mktemp "$(dirname "$path")/.$(basename "$path").XXXXXX")"
    cat >"$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$path"
}

# True when PATH does not exist or is one of our launchers (so we may overwrite / delete it).
is_our_launcher() {
    [[ ! -e "$1" ]] && return 0
    grep -q -e "$LAUNCHER_TAG" -e "X-SanaVideoStudio=true" "$1" 2>/dev/null
}

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --prefix DIR          environment location (default: ${XDG_DATA_HOME:-~/.local/share}/sana-video-studio)
  --dev                 also install the test tools (the [test] extra)
  --dry-run             print the plan and the commands without doing anything
  --uninstall           remove the environment and the launchers (models and caches are kept)
  --torch-build B       force a build: auto (default), cpu, cu126, cu128, cu130
  --torch-spec S        pip requirement for torch (default torch==<table version>; env SANA_TORCH_SPEC)
  --torch-index URL     index for torch, or "default" for pip's configured index (env SANA_TORCH_INDEX)
  --source DIR|WHEEL    what to install (default: the checkout this script is in)
  --python PY           the Python to build the environment from (>= 3.10)
  --bin-dir DIR         where the wrappers go (default ~/.local/bin)
  --no-launchers        skip the desktop entry and the wrappers
EOF
}

main() {
    set -euo pipefail
    local prefix="${SANA_PREFIX:-${XDG_DATA_HOME:-$HOME/.local/share}/$APP_NAME}"
    local bin_dir="${SANA_BIN_DIR:-$HOME/.local/bin}"
    local apps_dir="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
    local torch_build="${SANA_TORCH_BUILD:-auto}" torch_spec="${SANA_TORCH_SPEC:-}" torch_index="${SANA_TORCH_INDEX:-}"
    local source="" python_arg="${SANA_PYTHON:-}" dev=0 uninstall=0 launchers=1
    DRY_RUN=0
    while (($#)); do
        case "$1" in
            --prefix) prefix="${2:?--prefix needs a folder}"; shift ;;
            --prefix=*) prefix="${1#*=}" ;;
            --dev) dev=1 ;;
            --dry-run) DRY_RUN=1 ;;
            --uninstall) uninstall=1 ;;
            --torch-build) torch_build="${2:?--torch-build needs a value}"; shift ;;
            --torch-build=*) torch_build="${1#*=}" ;;
            --torch-spec) torch_spec="${2:?--torch-spec needs a value}"; shift ;;
            --torch-spec=*) torch_spec="${1#*=}" ;;
            --torch-index) torch_index="${2:?--torch-index needs a value}"; shift ;;
            --torch-index=*) torch_index="${1#*=}" ;;
            --source) source="${2:?--source needs a path}"; shift ;;
            --source=*) source="${1#*=}" ;;
            --python) python_arg="${2:?--python needs a path}"; shift ;;
            --python=*) python_arg="${1#*=}" ;;
            --bin-dir) bin_dir="${2:?--bin-dir needs a folder}"; shift ;;
            --bin-dir=*) bin_dir="${1#*=}" ;;
            --no-launchers) launchers=0 ;;
            -h | --help) usage; return 0 ;;
            *) die "unknown option $1 (see --help)" ;;
        esac
        shift
    done
    case "$torch_build" in auto | cpu | cu126 | cu128 | cu130) ;; *) die "--torch-build must be auto, cpu, cu126, cu128 or cu130, not '$torch_build'" ;; esac
    prefix="${prefix%/}"
    [[ -n "$prefix" && "$prefix" != "$HOME" ]] || die "refusing to use '$prefix' as the prefix; pass --prefix with a dedicated folder"

    local desktop_file="$apps_dir/$APP_NAME.desktop"
    local wrappers=("$bin_dir/sana-video-studio" "$bin_dir/sana-video")

    if ((uninstall)); then
        uninstall_all "$prefix" "$desktop_file" "${wrappers[@]}"
        return 0
    fi

    # --- what to install -------------------------------------------------------------------------------------------
    [[ -z "$source" ]] && source="$(default_source)"
    [[ -n "$source" ]] || die "no source to install: run this script from a checkout, or pass --source DIR|WHEEL"
    [[ -e "$source" ]] || die "source '$source' does not exist"
    [[ -d "$source" || "$source" == *.whl ]] || die "source '$source' must be a checkout folder or a .whl file"
    local extras="gui"
    ((dev)) && extras="gui,test"
    local constraints
    constraints="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/constraints.txt"

    local python
    python="$(find_python "$python_arg")" ||
        die "no Python >= 3.10 with the venv module found. Install one (Debian/Ubuntu: sudo apt install python3 python3-venv) or pass --python"

    # --- GPU -> torch build --------------------------------------------------------------------------------------------
    local smi_output="" choice build torch_version gpu_name gpu_cc gpu_driver why
    if smi_output="$(query_gpus)"; then :; else smi_output=""; fi
    choice="$(choose_torch_build "$smi_output" linux)"
    IFS='|' read -r build torch_version gpu_name gpu_cc gpu_driver why <<<"$choice"
    if [[ "$torch_build" != auto ]]; then
        why="forced with --torch-build $torch_build (auto would pick $build: $why)"
        build="$torch_build"
        torch_version="$(torch_version_for_build "$build")"
    fi
    local spec_why="table" index_why="table"
    if [[ -n "$torch_spec" ]]; then spec_why="--torch-spec / SANA_TORCH_SPEC"; else torch_spec="torch==$torch_version"; fi
    if [[ -n "$torch_index" ]]; then index_why="--torch-index / SANA_TORCH_INDEX"; else torch_index="$(torch_index_for "$build")"; fi

    log "SANA-Video Studio installer"
    log "  GPU:          ${gpu_name:-none}${gpu_cc:+ (compute capability $gpu_cc, driver $gpu_driver)}"
    log "  torch build:  $build - $why"
    log "  torch:        $torch_spec ($spec_why)"
    log "  torch index:  $torch_index ($index_why)"
    log "  python:       $python ($("$python" -c 'import sys; print(sys.version.split()[0])'))"
    log "  prefix:       $prefix"
    log "  source:       $source [$extras]"
    log "  launchers:    $( ((launchers)) && echo "$desktop_file, ${wrappers[*]}" || echo none)"
    ((DRY_RUN)) && log "Dry run: nothing below is executed."

    # --- environment (create, or repair a broken one) ------------------------------------------------------------------
    # On Linux the default prefix is also platformdirs' user_data_dir, where the app may keep its own files: only the
    # venv's own entries are ever replaced or deleted, never the whole folder.
    local venv_python="$prefix/bin/python"
    if [[ -x "$venv_python" ]] && "$venv_python" -c 'import sys, pip; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; then
        log "Reusing the environment in $prefix (repair/upgrade in place)."
    else
        if [[ -e "$prefix" && ! -d "$prefix" ]]; then
            die "$prefix exists and is not a folder; choose another --prefix"
        fi
        if [[ -e "$prefix/pyvenv.cfg" || -e "$prefix/bin" ]]; then
            [[ -f "$prefix/$INSTALL_MARKER" || -f "$prefix/pyvenv.cfg" ]] ||
                die "$prefix/bin exists but $prefix is not a Python environment; choose another --prefix"
            log "The environment in $prefix is broken or incomplete: rebuilding it."
            remove_venv_parts "$prefix"
        fi
        run "$python" -m venv "$prefix"
    fi
    ((DRY_RUN)) || printf 'app=%s\nbuild=%s\ntorch=%s\nindex=%s\nsource=%s\ninstalled=%s\n' "$APP_NAME" "$build" \
        "$torch_spec" "$torch_index" "$source" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" |
        write_file "$prefix/$INSTALL_MARKER" 644

    # --- torch --------------------------------------------------------------------------------------------------------
    local -a pip=("$venv_python" -m pip --disable-pip-version-check)
    local -a index_args=()
    [[ "$torch_index" != default ]] && index_args=(--index-url "$torch_index")
    if [[ ! -x "$venv_python" ]] && ((DRY_RUN)); then :; else
        # a different build of the same version (e.g. +cpu -> +cu130) would count as satisfied: remove it first
        local installed_torch=""
        installed_torch="$("$venv_python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)"
        if [[ -n "$installed_torch" && "$torch_index" != default && "$build" != auto ]]; then
            if [[ "$installed_torch" != *"+$build" ]]; then
                log "Installed torch $installed_torch is not the $build build: replacing it."
                run "${pip[@]}" uninstall -y torch
            fi
        fi
    fi
    run "${pip[@]}" install "${index_args[@]}" "$torch_spec"

    # --- the app, with pinned dependency versions ----------------------------------------------------------------------
    local -a constraint_args=()
    [[ -f "$constraints" ]] && constraint_args=(-c "$constraints")
    local target="$source"
    [[ -d "$source" ]] && target="$(cd "$source" && pwd)"
    if [[ -d "$target" ]]; then
        # build from a clean copy: pip's in-tree build would write build/ and *.egg-info into the checkout (and put
        # stale files from an old build/ into the wheel)
        if ((DRY_RUN)); then
            log "would copy $target (without .git, build/, caches) to a temporary folder and install from there"
        else
            STAGE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/sana-video-src.XXXXXX")"
            trap 'rm -rf "$STAGE_DIR"' EXIT
            "$venv_python" - "$target" "$STAGE_DIR/src" "$prefix" <<'PY'
import shutil, sys
from pathlib import Path
src, dst, prefix = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]).resolve()
TOP = {".git", "build", "dist", "out", ".venv", "venv", ".whl", ".gl", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
def ignore(folder, names):
    here = Path(folder)
    skip = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", ".pyc"))}
    if here.resolve() == src.resolve():
        skip |= TOP & set(names)
    return skip | {n for n in names if (here / n).resolve() == prefix}
shutil.copytree(src, dst, ignore=ignore, symlinks=True)
PY
            target="$STAGE_DIR/src"
        fi
    fi
    # pip always reinstalls a local folder, but skips a local wheel of the version already installed: force that one
    run "${pip[@]}" install "${constraint_args[@]}" "$target[$extras]"
    if [[ "$target" == *.whl ]]; then run "${pip[@]}" install --no-deps --force-reinstall "$target"; fi

    # --- check ----------------------------------------------------------------------------------------------------------
    run "$venv_python" -c 'import torch, core; print("torch", torch.__version__, "| CUDA available:", torch.cuda.is_available(), "| archs:", " ".join(torch.cuda.get_arch_list()) or "none")'

    # --- launchers --------------------------------------------------------------------------------------------------------
    if ((launchers)); then
        install_launchers "$prefix" "$desktop_file" "$bin_dir"
    fi

    log ""
    if ((DRY_RUN)); then log "Dry run finished: nothing was changed."; return 0; fi
    log "Done. Start the app with: $bin_dir/sana-video-studio   (or $prefix/bin/sana-video-studio)"
    log "Check the setup with:     $prefix/bin/sana-video doctor"
    case ":$PATH:" in *":$bin_dir:"*) ;; *) ((launchers)) && log "Note: $bin_dir is not on your PATH; add it to run 'sana-video-studio' by name." ;; esac
    return 0
}

install_launchers() {
    local prefix="$1" desktop_file="$2" bin_dir="$3" name target
    for name in sana-video-studio sana-video; do
        target="$bin_dir/$name"
        if ! is_our_launcher "$target"; then
            warn "$target exists and was not written by this installer: left alone"
            continue
        fi
        printf '#!/bin/sh\n%s (prefix %s)\nexec "%s/bin/%s" "$@"\n' "$LAUNCHER_TAG" "$prefix" "$prefix" "$name" |
            write_file "$target" 755
    done
    if ! is_our_launcher "$desktop_file"; then
        warn "$desktop_file exists and was not written by this installer: left alone"
        return 0
    fi
    local icon="video-x-generic" found
    found="$(ls "$prefix"/lib/python3*/site-packages/resources/icons/*.svg 2>/dev/null | head -n 1 || true)"
    [[ -n "$found" ]] && icon="$found"
    cat <<EOF | write_file "$desktop_file" 644
[Desktop Entry]
Type=Application
Name=SANA-Video Studio
Comment=Long-video generation with SANA-Video on your own GPU
Exec="$prefix/bin/sana-video-studio" %F
Icon=$icon
Terminal=false
Categories=AudioVideo;Video;Graphics;
X-SanaVideoStudio=true
EOF
    if [[ "${DRY_RUN:-0}" != 1 ]] && command -v update-desktop-database >/dev/null 2>&1; then
        update-desktop-database "$(dirname "$desktop_file")" >/dev/null 2>&1 || true
    fi
}

# Deletes what `python -m venv` and pip put into a prefix, and nothing else.
remove_venv_parts() {
    local prefix="$1" part
    for part in bin include lib lib64 share/man pyvenv.cfg; do
        if [[ -e "$prefix/$part" || -L "$prefix/$part" ]]; then run rm -rf "${prefix:?}/$part"; fi
    done
    if [[ "${DRY_RUN:-0}" != 1 && -d "$prefix/share" ]]; then rmdir "$prefix/share" 2>/dev/null || true; fi
}

uninstall_all() {
    local prefix="$1" desktop_file="$2"
    shift 2
    local f
    for f in "$desktop_file" "$@"; do
        if [[ -e "$f" ]]; then
            if is_our_launcher "$f"; then run rm -f "$f"; else warn "$f was not written by this installer: left alone"; fi
        fi
    done
    if [[ -d "$prefix" ]]; then
        if [[ -f "$prefix/$INSTALL_MARKER" ]]; then
            remove_venv_parts "$prefix"
            run rm -f "$prefix/$INSTALL_MARKER"
            if [[ "${DRY_RUN:-0}" != 1 ]]; then rmdir "$prefix" 2>/dev/null || log "Kept $prefix: it holds other files (app data)."; fi
        else
            warn "$prefix has no $INSTALL_MARKER: not a SANA-Video Studio environment, left alone"
        fi
    else
        log "No environment at $prefix."
    fi
    log "Models and caches are kept: the Hugging Face cache (${HF_HUB_CACHE:-${HF_HOME:-~/.cache/huggingface}/hub}),"
    log "${XDG_CACHE_HOME:-~/.cache}/$APP_NAME and the app's files in ${XDG_DATA_HOME:-~/.local/share}/$APP_NAME; delete them by hand to free the space."
}

if [[ "${1:-}" != "--source-only" ]]; then
    main "$@"
fi
