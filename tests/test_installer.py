"""installer/install.sh: the GPU -> PyTorch build choice (real script functions, faked nvidia-smi), the plan printed by
--dry-run, launchers and uninstall on a temporary prefix, and the PowerShell mirror of the table.

The expected builds are checked two ways: named expectations per card, and against PyTorch's published support matrix
(written out independently below), so a table row that picks a build without kernels for the card, or one the driver
cannot run, fails here."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL_SH = REPO / "installer" / "install.sh"
INSTALL_PS1 = REPO / "installer" / "install.ps1"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not available")

# PyTorch RELEASE.md "PyTorch CUDA Support Matrix" (2.12-2.14) and the 2.11 cu128 build: the SASS architectures each
# build ships, and the CUDA toolkit's minimum Linux driver for it (CUDA 12.x minor-version compatibility: 525.60).
BUILD_ARCHS = {
    "cu126": {50, 60, 70, 75, 80, 86, 90},
    "cu128": {75, 80, 86, 90, 100, 120},
    "cu130": {75, 80, 86, 90, 100, 120},
}
BUILD_MIN_DRIVER_LINUX = {"cu126": (525, 60), "cu128": (570, 26), "cu130": (580, 65)}


def _sass_covers(build: str, sm: int) -> bool:
    """Kernels of the same major architecture with a lower or equal minor run on the card (sm_120 code on sm_121)."""
    return any(a // 10 == sm // 10 and a <= sm for a in BUILD_ARCHS[build])


def _driver_tuple(driver: str) -> tuple[int, int]:
    parts = [int(p) for p in driver.split(".")]
    return parts[0], parts[1] if len(parts) > 1 else 0


def choose_many(smi_outputs: list[str], os_name: str = "linux") -> list[dict]:
    """Call the real choose_torch_build from install.sh once per output (one bash process for all of them)."""
    proc = subprocess.run(
        [BASH, "-c", 'source "$0" --source-only; os="$1"; shift; for s in "$@"; do choose_torch_build "$s" "$os"; done',
         str(INSTALL_SH), os_name, *smi_outputs],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(smi_outputs), proc.stdout
    results = []
    for line in lines:
        build, torch_version, gpu, cc, driver, why = line.split("|", 5)
        results.append({"build": build, "torch": torch_version, "gpu": gpu, "cc": cc, "driver": driver, "why": why})
    return results


def choose(smi_output: str, os_name: str = "linux") -> dict:
    return choose_many([smi_output], os_name)[0]


# card -> nvidia-smi line, expected build and torch version
CARDS = {
    "rtx5090": ("NVIDIA GeForce RTX 5090, 12.0, 590.44.01", "cu130", "2.13.0"),
    "rtx5090-driver575": ("NVIDIA GeForce RTX 5090, 12.0, 575.64.03", "cu128", "2.11.0"),
    "rtx4090": ("NVIDIA GeForce RTX 4090, 8.9, 580.95.05", "cu130", "2.13.0"),
    "rtx4090-driver550": ("NVIDIA GeForce RTX 4090, 8.9, 550.54.14", "cu126", "2.13.0"),
    "rtx3090": ("NVIDIA GeForce RTX 3090, 8.6, 535.183.01", "cu126", "2.13.0"),
    "h100": ("NVIDIA H100 80GB HBM3, 9.0, 580.65.06", "cu130", "2.13.0"),
    "b200": ("NVIDIA B200, 10.0, 580.82.07", "cu130", "2.13.0"),
    "gtx1080": ("NVIDIA GeForce GTX 1080, 6.1, 580.95.05", "cu126", "2.13.0"),
}


@pytest.fixture(scope="module")
def card_choices() -> dict[str, dict]:
    names = sorted(CARDS)
    return dict(zip(names, choose_many([CARDS[n][0] for n in names])))


@pytest.mark.parametrize("card", sorted(CARDS))
def test_choose_torch_build_per_card(card, card_choices):
    line, want_build, want_torch = CARDS[card]
    got = card_choices[card]
    assert (got["build"], got["torch"]) == (want_build, want_torch), got
    name, cc, driver = (f.strip() for f in line.split(","))
    assert (got["gpu"], got["cc"], got["driver"]) == (name, cc, driver)
    sm = int(cc.replace(".", ""))
    # the chosen build has kernels for the card and runs on its driver (PyTorch's own matrix, not our table)
    assert _sass_covers(got["build"], sm), f"{got['build']} has no kernels for sm_{sm}"
    assert _driver_tuple(driver) >= BUILD_MIN_DRIVER_LINUX[got["build"]]
    assert got["why"]


def test_blackwell_never_gets_a_build_without_its_kernels():
    # the "no kernel image" trap: every driver that can run any Blackwell-capable build must get one of those
    lines = [f"{card}, {driver}" for driver in ("570.26", "572.16", "575.64.03", "580.65.06", "590.1")
             for card in ("NVIDIA GeForce RTX 5090, 12.0", "NVIDIA B200, 10.0", "NVIDIA B300, 10.3")]
    for line, got in zip(lines, choose_many(lines)):
        assert got["build"] in ("cu128", "cu130"), (line, got)
        assert _sass_covers(got["build"], int(got["cc"].replace(".", "")))
        assert _driver_tuple(got["driver"]) >= BUILD_MIN_DRIVER_LINUX[got["build"]]


def test_no_gpu_and_broken_outputs_pick_cpu():
    assert choose("")["build"] == "cpu"
    assert "no NVIDIA GPU" in choose("")["why"]
    broken_outputs = [
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
        "NVIDIA driver is installed and running.",
        'Field "compute_cap" is not a valid field to query.',
        "NVIDIA GeForce RTX 4090, [N/A], 550.54.14",
        "NVIDIA GeForce RTX 4090, 8.9",
        "garbage|with|pipes",
    ]
    for broken, got in zip(broken_outputs, choose_many(broken_outputs)):
        assert got["build"] == "cpu", (broken, got)
        assert "not understood" in got["why"]


def test_old_driver_and_ancient_gpu_fall_back_to_cpu_with_a_reason():
    got = choose("NVIDIA GeForce RTX 3090, 8.6, 470.82.01")
    assert got["build"] == "cpu" and "driver 470.82.01 is too old" in got["why"]
    got = choose("Tesla K80, 3.7, 470.82.01")
    assert got["build"] == "cpu" and "older than any CUDA build" in got["why"]


def test_several_gpus_choose_for_the_newest():
    got = choose("NVIDIA GeForce RTX 3090, 8.6, 590.1\nNVIDIA GeForce RTX 5090, 12.0, 590.1\n")
    assert got["build"] == "cu130" and got["gpu"] == "NVIDIA GeForce RTX 5090" and "2 GPUs" in got["why"]


def test_windows_driver_minimums_differ():
    # CUDA 13.0 needs 580.65 on Linux but 580.88 on Windows
    assert choose("NVIDIA GeForce RTX 5090, 12.0, 580.70", "linux")["build"] == "cu130"
    assert choose("NVIDIA GeForce RTX 5090, 12.0, 580.70", "windows")["build"] == "cu128"


# ----------------------------------------------------------------------------------------------------------------------
# the whole script under --dry-run, with a fake nvidia-smi (or none) on a minimal PATH

TOOLS = ("dirname", "grep", "sed", "cut", "tr", "ls", "head", "cat", "mktemp", "chmod", "mv", "mkdir", "date", "rm",
         "rmdir")


def _minimal_path(tmp_path: Path, smi_script: str | None) -> str:
    """A PATH with just the tools install.sh uses, plus a fake nvidia-smi (or none: the "missing" case on any host)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir(parents=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    if smi_script is not None:
        smi = bindir / "nvidia-smi"
        smi.write_text("#!" + BASH + "\n" + smi_script)
        smi.chmod(0o755)
    return str(bindir)


def dry_run(tmp_path: Path, smi_script: str | None, *args: str, env: dict | None = None) -> str:
    full_env = {"PATH": _minimal_path(tmp_path, smi_script), "HOME": str(tmp_path / "home"), "LANG": "C",
                "SANA_NO_WSL_SMI": "1"}
    full_env.update(env or {})
    proc = subprocess.run(
        [BASH, str(INSTALL_SH), "--dry-run", "--python", sys.executable, "--prefix", str(tmp_path / "prefix"), *args],
        capture_output=True, text=True, env=full_env, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _plan(out: str) -> dict:
    fields = {}
    for key in ("GPU", "torch build", "torch", "torch index"):
        m = re.search(rf"^  {key}:\s+(.*)$", out, re.M)
        fields[key] = m.group(1) if m else None
    return fields


@pytest.mark.parametrize("card", ["rtx5090", "rtx4090", "rtx3090", "h100", "b200"])
def test_dry_run_with_fake_nvidia_smi(tmp_path, card):
    line, want_build, want_torch = CARDS[card]
    out = dry_run(tmp_path, f'echo "{line}"\n')
    plan = _plan(out)
    assert plan["torch build"].startswith(want_build + " - ")
    assert plan["torch"].startswith(f"torch=={want_torch} ")
    assert plan["torch index"].startswith(f"https://download.pytorch.org/whl/{want_build} ")
    assert f"--index-url https://download.pytorch.org/whl/{want_build} torch=={want_torch}" in out
    assert "would run:" in out and "Dry run finished" in out
    assert not (tmp_path / "prefix").exists() and not (tmp_path / "home").exists()  # nothing was touched


def test_dry_run_without_nvidia_smi_uses_the_cpu_index(tmp_path):
    out = dry_run(tmp_path, None)
    plan = _plan(out)
    assert plan["GPU"] == "none"
    assert plan["torch build"].startswith("cpu - no NVIDIA GPU")
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in out


def test_dry_run_with_failing_nvidia_smi(tmp_path):
    out = dry_run(tmp_path, "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\n"
                            "exit 9\n")
    assert _plan(out)["torch build"].startswith("cpu - nvidia-smi output not understood")


def test_torch_overrides_for_ci(tmp_path):
    # CI here: the local torch==2.13.0 wheel from pip's configured index, no download.pytorch.org
    out = dry_run(tmp_path, 'echo "NVIDIA GeForce RTX 5090, 12.0, 590.1"\n', "--torch-build", "cpu",
                  "--torch-spec", "torch==2.13.0", "--torch-index", "default")
    plan = _plan(out)
    assert plan["torch build"].startswith("cpu - forced with --torch-build cpu (auto would pick cu130")
    assert plan["torch index"].startswith("default ")
    assert "--index-url" not in out
    assert re.search(r"would run: .* install torch==2\.13\.0$", out, re.M)
    # the same through the environment
    out = dry_run(tmp_path / "env", None, env={"SANA_TORCH_SPEC": "torch==2.12.0", "SANA_TORCH_INDEX": "https://x/y"})
    assert "--index-url https://x/y torch==2.12.0" in out


def test_dev_adds_the_test_extra_and_source_is_the_checkout(tmp_path):
    out = dry_run(tmp_path, None, "--dev")
    assert re.search(r"would run: .* install -c \S+constraints\.txt " + re.escape(str(REPO)) + r"\\\[gui\\,test\\\]", out)


def test_bad_options_fail_with_a_message(tmp_path):
    env = {"PATH": _minimal_path(tmp_path, None), "HOME": str(tmp_path)}
    for args in (["--torch-build", "cu999"], ["--bogus"], ["--source", str(tmp_path / "nope")]):
        proc = subprocess.run([BASH, str(INSTALL_SH), "--dry-run", "--python", sys.executable, *args],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode != 0 and "ERROR:" in proc.stderr, (args, proc.stderr)


# ----------------------------------------------------------------------------------------------------------------------
# launchers and uninstall on a temporary prefix (no pip involved)

def _bash_fn(script: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, "-c", f'source "{INSTALL_SH}" --source-only; set -e; {script}'],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=60)


def test_launchers_then_uninstall_keeps_foreign_files(tmp_path):
    prefix, bindir, apps = tmp_path / "prefix", tmp_path / "bin", tmp_path / "share" / "applications"
    for part in ("bin", "lib/python3.11/site-packages", "include"):
        (prefix / part).mkdir(parents=True)
    (prefix / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (prefix / "sana-video-studio-install.txt").write_text("app=sana-video-studio\n")
    (prefix / "projects").mkdir()                      # app data living in the same folder must survive
    (prefix / "projects" / "p.json").write_text("{}")
    bindir.mkdir()
    (bindir / "sana-video").write_text("#!/bin/sh\necho someone else's tool\n")   # not ours: left alone
    proc = _bash_fn(f'install_launchers "{prefix}" "{apps}/sana-video-studio.desktop" "{bindir}"', {})
    assert proc.returncode == 0, proc.stderr
    assert "left alone" in proc.stderr
    wrapper = (bindir / "sana-video-studio").read_text()
    assert f'exec "{prefix}/bin/sana-video-studio" "$@"' in wrapper and os.access(bindir / "sana-video-studio", os.X_OK)
    assert "someone else" in (bindir / "sana-video").read_text()
    desktop = (apps / "sana-video-studio.desktop").read_text()
    assert f'Exec="{prefix}/bin/sana-video-studio" %F' in desktop and "Type=Application" in desktop

    proc = subprocess.run([BASH, str(INSTALL_SH), "--uninstall", "--prefix", str(prefix), "--bin-dir", str(bindir)],
                          capture_output=True, text=True, env={**os.environ, "XDG_DATA_HOME": str(tmp_path / "share")},
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not (bindir / "sana-video-studio").exists() and not (apps / "sana-video-studio.desktop").exists()
    assert (bindir / "sana-video").exists()
    assert not (prefix / "bin").exists() and not (prefix / "lib").exists() and not (prefix / "pyvenv.cfg").exists()
    assert (prefix / "projects" / "p.json").exists()


def test_uninstall_refuses_a_prefix_without_the_marker(tmp_path):
    prefix = tmp_path / "somebody-else"
    (prefix / "bin").mkdir(parents=True)
    proc = subprocess.run([BASH, str(INSTALL_SH), "--uninstall", "--prefix", str(prefix), "--bin-dir",
                           str(tmp_path / "bin")], capture_output=True, text=True,
                          env={**os.environ, "XDG_DATA_HOME": str(tmp_path / "share")}, timeout=60)
    assert proc.returncode == 0
    assert "left alone" in proc.stderr and (prefix / "bin").exists()


def test_shell_syntax():
    proc = subprocess.run([BASH, "-n", str(INSTALL_SH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([BASH, "-n", str(REPO / "installer" / "ci_smoke.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------------------------------------------------
# PowerShell mirror

def _between_markers(text: str) -> str:
    m = re.search(r"# BEGIN TORCH BUILD TABLE\n(.*?)# END TORCH BUILD TABLE", text, re.S)
    assert m, "table markers missing"
    return m.group(1)


def shell_table() -> list[tuple[str, ...]]:
    block = _between_markers(INSTALL_SH.read_text())
    m = re.search(r"TORCH_BUILD_TABLE='(.*?)'\s*$", block, re.S)
    assert m
    return [tuple(row.split("|")) for row in m.group(1).strip().splitlines()]


def powershell_table() -> list[tuple[str, ...]]:
    block = _between_markers(INSTALL_PS1.read_text())
    rows = re.findall(r"@\(((?:'(?:[^']|'')*'\s*,?\s*)+)\)", block)
    return [tuple(v.replace("''", "'") for v in re.findall(r"'((?:[^']|'')*)'", row)) for row in rows]


def test_powershell_table_equals_shell_table():
    sh, ps = shell_table(), powershell_table()
    assert len(sh) >= 4 and all(len(r) == 7 for r in sh)
    assert ps == sh


def test_powershell_defaults_equal_shell_defaults():
    sh, ps = INSTALL_SH.read_text(), INSTALL_PS1.read_text()
    sh_version = re.search(r'^TORCH_DEFAULT_VERSION="([^"]+)"', sh, re.M).group(1)
    ps_version = re.search(r"^\$TorchDefaultVersion = '([^']+)'", ps, re.M).group(1)
    assert sh_version == ps_version
    sh_base = re.search(r'^TORCH_INDEX_BASE="([^"]+)"', sh, re.M).group(1)
    ps_base = re.search(r"^\$TorchIndexBase = '([^']+)'", ps, re.M).group(1)
    assert sh_base == ps_base == "https://download.pytorch.org/whl"


@functools.lru_cache(maxsize=1)
def _apt_policy_powershell() -> str:
    if not shutil.which("apt-cache"):
        return ""
    return subprocess.run(["apt-cache", "policy", "powershell"], capture_output=True, text=True).stdout.strip()


def _pwsh_or_skip() -> str:
    pwsh = shutil.which("pwsh")
    if pwsh:
        return pwsh
    policy = _apt_policy_powershell()
    pytest.skip("pwsh is not installed (pip cannot provide it; apt-cache policy powershell: "
                f"{policy or 'no candidate, the Microsoft apt repository is not configured'})")


def test_powershell_syntax():
    pwsh = _pwsh_or_skip()
    script = ("$errs = $null; [void][System.Management.Automation.Language.Parser]::ParseFile("
              f"'{INSTALL_PS1}', [ref]$null, [ref]$errs); if ($errs) {{ $errs | ForEach-Object {{ $_.ToString() }}; exit 1 }}")
    proc = subprocess.run([pwsh, "-NoProfile", "-NonInteractive", "-Command", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("card", sorted(CARDS))
def test_powershell_choice_equals_shell_choice(card):
    pwsh = _pwsh_or_skip()
    line = CARDS[card][0]
    script = (f". '{INSTALL_PS1}' -SourceOnly; $c = Select-TorchBuild '{line}' 'linux'; "
              "Write-Output \"$($c.Build)|$($c.TorchVersion)\"")
    proc = subprocess.run([pwsh, "-NoProfile", "-NonInteractive", "-Command", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = choose(line)
    assert proc.stdout.strip() == f"{got['build']}|{got['torch']}"


def test_rerun_on_a_broken_environment_rebuilds_only_the_venv(tmp_path):
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")   # a venv whose Python no longer runs
    (prefix / "bin" / "python").chmod(0o755)
    (prefix / "pyvenv.cfg").write_text("home = /gone\n")
    (prefix / "projects").mkdir()
    out = dry_run(tmp_path, None)
    assert "broken or incomplete: rebuilding it" in out
    assert f"would run: rm -rf {prefix}/bin" in out and f"would run: rm -rf {prefix}/pyvenv.cfg" in out
    assert "projects" not in out.split("Dry run:")[1]
    assert re.search(rf"would run: \S+ -m venv {re.escape(str(prefix))}$", out, re.M)
    assert (prefix / "bin" / "python").exists()   # dry run: untouched


def test_prefix_with_a_foreign_bin_folder_is_refused(tmp_path):
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    env = {"PATH": _minimal_path(tmp_path, None), "HOME": str(tmp_path / "home")}
    proc = subprocess.run([BASH, str(INSTALL_SH), "--dry-run", "--python", sys.executable, "--prefix", str(prefix)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0 and "not a Python environment" in proc.stderr
