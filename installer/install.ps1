<#
.SYNOPSIS
    SANA-Video Studio installer for Windows.

.DESCRIPTION
    One command: creates an isolated Python environment (venv) in a prefix, picks the PyTorch build that has kernels
    for this machine's NVIDIA GPU (or the CPU build), installs the app with pinned dependency versions, and adds a
    Start menu shortcut. Re-running repairs or upgrades the same prefix in place. Mirrors installer/install.sh; the
    GPU -> PyTorch table below must stay equal to the one there (tests/test_installer.py checks it).

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File installer\install.ps1
    powershell -ExecutionPolicy Bypass -File installer\install.ps1 -DryRun
    powershell -ExecutionPolicy Bypass -File installer\install.ps1 -Uninstall
#>
[CmdletBinding()]
param(
    [string]$Prefix = $(if ($env:SANA_PREFIX) { $env:SANA_PREFIX } else { Join-Path $env:LOCALAPPDATA 'SanaVideoStudio' }),
    [switch]$Dev,
    [switch]$DryRun,
    [switch]$Uninstall,
    [ValidateSet('auto', 'cpu', 'cu126', 'cu128', 'cu130')]
    [string]$TorchBuild = $(if ($env:SANA_TORCH_BUILD) { $env:SANA_TORCH_BUILD } else { 'auto' }),
    [string]$TorchSpec = $env:SANA_TORCH_SPEC,
    [string]$TorchIndex = $env:SANA_TORCH_INDEX,
    [string]$Source = '',
    [string]$Python = $env:SANA_PYTHON,
    [switch]$NoLaunchers,
    [switch]$SourceOnly
)

$ErrorActionPreference = 'Stop'

# GPU -> PyTorch build table: first row whose compute-capability range contains the GPU and whose minimum driver the
# installed driver meets wins; no row -> the CPU build. Same rows as install.sh (see the sources named there).
# Columns: MinCC, MaxCC, Build, TorchVersion, MinDriverLinux, MinDriverWindows, Why
# BEGIN TORCH BUILD TABLE
$TorchBuildTable = @(
    @('10.0', '99.9', 'cu130', '2.13.0', '580.65', '580.88', 'Blackwell (sm_100 B200, sm_120 RTX 50) has kernels only in CUDA 12.8+ builds; torch 2.13 ships them as cu130'),
    @('10.0', '99.9', 'cu128', '2.11.0', '570.26', '570.65', 'Blackwell on a 570-579 driver: CUDA 13 needs driver 580+, torch 2.11 is the newest CUDA 12.8 build (update the driver and re-run to get torch 2.13)'),
    @('7.5', '9.9', 'cu130', '2.13.0', '580.65', '580.88', 'Turing/Ampere/Ada/Hopper on a CUDA 13 driver: the same cu130 build as Blackwell'),
    @('5.0', '9.9', 'cu126', '2.13.0', '525.60', '528.33', 'cu126 has kernels for sm_50..sm_90 and runs on any CUDA 12 driver (cu130 needs driver 580+ and dropped Maxwell/Pascal/Volta)')
)
# END TORCH BUILD TABLE

$TorchDefaultVersion = '2.13.0'
$TorchIndexBase = 'https://download.pytorch.org/whl'
$InstallMarker = 'sana-video-studio-install.txt'
$ShortcutName = 'SANA-Video Studio.lnk'

function ConvertTo-CcInt([string]$Cc) {
    # "12.0" -> 120, "8.9" -> 89; $null for anything else
    if ($Cc -match '^\s*(\d+)\.(\d)\s*$') { return [int]$Matches[1] * 10 + [int]$Matches[2] }
    return $null
}

function Test-VersionGe([string]$A, [string]$B) {
    # dotted numeric comparison, missing components are 0
    $pa = $A.Split('.'); $pb = $B.Split('.')
    for ($i = 0; $i -lt [Math]::Max($pa.Count, $pb.Count); $i++) {
        $x = 0; $y = 0
        if ($i -lt $pa.Count) { if (-not [int]::TryParse($pa[$i], [ref]$x)) { return $false } }
        if ($i -lt $pb.Count) { if (-not [int]::TryParse($pb[$i], [ref]$y)) { return $false } }
        if ($x -gt $y) { return $true }
        if ($x -lt $y) { return $false }
    }
    return $true
}

function Get-GpuQuery {
    # nvidia-smi's CSV lines, or $null when nvidia-smi is missing (a failing nvidia-smi still returns its message)
    $smi = Get-Command nvidia-smi -ErrorAction SilentlyContinue
    if (-not $smi) {
        $fallback = Join-Path $env:SystemRoot 'System32\nvidia-smi.exe'
        if (Test-Path $fallback) { $smi = Get-Item $fallback } else { return $null }
    }
    $path = if ($smi.Source) { $smi.Source } else { $smi.FullName }
    # native stderr must not become a terminating error under 'Stop' (Windows PowerShell 5.1)
    $ErrorActionPreference = 'Continue'
    try {
        return ((& $path --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>&1) | Out-String)
    } catch {
        return "$_"
    }
}

function Select-TorchBuild([string]$SmiOutput, [string]$Os = 'windows') {
    # Mirrors choose_torch_build in install.sh. Returns @{Build; TorchVersion; Gpu; Cc; Driver; Why}.
    $best = $null; $bestInt = -1; $bad = $null; $count = 0
    foreach ($line in ($SmiOutput -split "`r?`n")) {
        if ([string]::IsNullOrWhiteSpace($line)) { continue }
        $fields = $line.Split(',')
        $name = if ($fields.Count -gt 0) { $fields[0].Trim() } else { '' }
        $cc = if ($fields.Count -gt 1) { $fields[1].Trim() } else { '' }
        $driver = if ($fields.Count -gt 2) { $fields[2].Trim() } else { '' }
        $ccInt = ConvertTo-CcInt $cc
        if ($null -eq $ccInt -or $driver -notmatch '^\d+(\.\d+)*$' -or -not $name) {
            if (-not $bad) { $bad = $line.Trim() }
            continue
        }
        $count++
        if ($ccInt -gt $bestInt) { $bestInt = $ccInt; $best = @{ Gpu = $name; Cc = $cc; Driver = $driver } }
    }
    if ($count -eq 0) {
        if ($bad) {
            $shown = if ($bad.Length -gt 120) { $bad.Substring(0, 120) } else { $bad }
            $why = "nvidia-smi output not understood ($shown): installing the CPU build; fix the NVIDIA driver and re-run, or force a build with -TorchBuild"
        } else {
            $why = 'no NVIDIA GPU found (nvidia-smi missing or listed no GPU): CPU build, demo mode only'
        }
        return @{ Build = 'cpu'; TorchVersion = $TorchDefaultVersion; Gpu = ''; Cc = ''; Driver = ''; Why = $why }
    }
    $more = if ($count -gt 1) { " ($count GPUs; chose for the newest)" } else { '' }
    foreach ($row in $TorchBuildTable) {
        $lo = ConvertTo-CcInt $row[0]; $hi = ConvertTo-CcInt $row[1]
        $minDriver = if ($Os -eq 'linux') { $row[4] } else { $row[5] }
        if ($bestInt -ge $lo -and $bestInt -le $hi -and (Test-VersionGe $best.Driver $minDriver)) {
            return @{ Build = $row[2]; TorchVersion = $row[3]; Gpu = $best.Gpu; Cc = $best.Cc; Driver = $best.Driver; Why = $row[6] + $more }
        }
    }
    if ($bestInt -lt 50) {
        $why = "compute capability $($best.Cc) is older than any CUDA build of PyTorch supports (5.0+): CPU build, demo mode only"
    } else {
        $why = "driver $($best.Driver) is too old for any CUDA build that has kernels for sm_$($bestInt): CPU build for now; update the NVIDIA driver (580+ recommended) and re-run this installer"
    }
    return @{ Build = 'cpu'; TorchVersion = $TorchDefaultVersion; Gpu = $best.Gpu; Cc = $best.Cc; Driver = $best.Driver; Why = $why + $more }
}

function Get-TorchIndex([string]$Build) { return "$TorchIndexBase/$Build" }

function Get-TorchVersionForBuild([string]$Build) {
    foreach ($row in $TorchBuildTable) { if ($row[2] -eq $Build) { return $row[3] } }
    return $TorchDefaultVersion
}

function Find-Python([string]$Requested) {
    # A Python >= 3.10 with venv; returns the executable path
    $ErrorActionPreference = 'Continue'
    $candidates = @()
    if ($Requested) { $candidates += , @($Requested) }
    foreach ($v in '3.13', '3.12', '3.11', '3.10') { $candidates += , @('py', "-$v") }
    $candidates += , @('python'); $candidates += , @('python3')
    foreach ($c in $candidates) {
        $exe = $c[0]; $rest = @($c | Select-Object -Skip 1)
        if (-not (Get-Command $exe -ErrorAction SilentlyContinue)) { continue }
        try {
            $out = & $exe @rest -c 'import sys, venv, ensurepip; print(sys.executable) if sys.version_info >= (3, 10) else sys.exit(1)' 2>$null
            if ($LASTEXITCODE -eq 0 -and $out) { return ($out | Select-Object -Last 1).Trim() }
        } catch { continue }
    }
    return $null
}

function Invoke-Step([string]$Exe, [string[]]$Arguments) {
    $shown = ($Arguments | ForEach-Object { if ($_ -match '\s') { "`"$_`"" } else { $_ } }) -join ' '
    if ($DryRun) { Write-Host "would run: $Exe $shown"; return }
    Write-Host "+ $Exe $shown"
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) { throw "command failed ($LASTEXITCODE): $Exe $shown" }
}

function Get-StartMenuShortcut {
    return Join-Path ([Environment]::GetFolderPath('Programs')) $ShortcutName
}

function Remove-VenvParts([string]$Dir) {
    # only what `python -m venv` and pip create; never the whole folder
    foreach ($part in 'Scripts', 'Include', 'Lib', 'share', 'pyvenv.cfg') {
        $p = Join-Path $Dir $part
        if (Test-Path $p) {
            if ($DryRun) { Write-Host "would remove: $p" } else { Remove-Item -Recurse -Force $p }
        }
    }
}

function Invoke-Uninstall {
    $lnk = Get-StartMenuShortcut
    if (Test-Path $lnk) {
        if ($DryRun) { Write-Host "would remove: $lnk" } else { Remove-Item -Force $lnk }
    }
    if (Test-Path (Join-Path $Prefix $InstallMarker)) {
        Remove-VenvParts $Prefix
        $marker = Join-Path $Prefix $InstallMarker
        if ($DryRun) { Write-Host "would remove: $marker" } else {
            Remove-Item -Force $marker
            if (-not (Get-ChildItem $Prefix -Force | Select-Object -First 1)) { Remove-Item -Force $Prefix }
        }
    } elseif (Test-Path $Prefix) {
        Write-Warning "$Prefix has no $InstallMarker`: not a SANA-Video Studio environment, left alone"
    } else {
        Write-Host "No environment at $Prefix."
    }
    Write-Host 'Models and caches are kept (Hugging Face cache %USERPROFILE%\.cache\huggingface, app cache and data under %LOCALAPPDATA%\sana-video-studio); delete them by hand to free the space.'
}

function Invoke-Install {
    if (-not $Source) {
        $root = Split-Path -Parent $PSScriptRoot
        $pyproject = Join-Path $root 'pyproject.toml'
        if ((Test-Path $pyproject) -and (Select-String -Path $pyproject -Pattern 'name = "sana-video-studio"' -Quiet)) { $script:Source = $root }
    }
    if (-not $Source) { throw 'no source to install: run this script from a checkout, or pass -Source DIR|WHEEL' }
    if (-not (Test-Path $Source)) { throw "source '$Source' does not exist" }
    $target = (Resolve-Path $Source).Path
    $extras = if ($Dev) { 'gui,test' } else { 'gui' }
    $constraints = Join-Path $PSScriptRoot 'constraints.txt'

    $py = Find-Python $Python
    if (-not $py) { throw 'no Python >= 3.10 found. Install one from https://www.python.org/downloads/ (tick "Add to PATH") or pass -Python' }

    $smiOut = Get-GpuQuery
    $choice = Select-TorchBuild $(if ($null -eq $smiOut) { '' } else { $smiOut }) 'windows'
    $build = $choice.Build; $torchVersion = $choice.TorchVersion; $why = $choice.Why
    if ($TorchBuild -ne 'auto') {
        $why = "forced with -TorchBuild $TorchBuild (auto would pick $build`: $why)"
        $build = $TorchBuild
        $torchVersion = Get-TorchVersionForBuild $build
    }
    $specWhy = 'table'; $indexWhy = 'table'
    $spec = $TorchSpec; $index = $TorchIndex
    if ($spec) { $specWhy = '-TorchSpec / SANA_TORCH_SPEC' } else { $spec = "torch==$torchVersion" }
    if ($index) { $indexWhy = '-TorchIndex / SANA_TORCH_INDEX' } else { $index = Get-TorchIndex $build }

    $gpuText = if ($choice.Gpu) { "$($choice.Gpu) (compute capability $($choice.Cc), driver $($choice.Driver))" } else { 'none' }
    Write-Host 'SANA-Video Studio installer'
    Write-Host "  GPU:          $gpuText"
    Write-Host "  torch build:  $build - $why"
    Write-Host "  torch:        $spec ($specWhy)"
    Write-Host "  torch index:  $index ($indexWhy)"
    Write-Host "  python:       $py"
    Write-Host "  prefix:       $Prefix"
    Write-Host "  source:       $target [$extras]"
    Write-Host "  launchers:    $(if ($NoLaunchers) { 'none' } else { Get-StartMenuShortcut })"
    if ($DryRun) { Write-Host 'Dry run: nothing below is executed.' }

    # environment: reuse, or rebuild a broken one (only the venv's own parts)
    $venvPy = Join-Path $Prefix 'Scripts\python.exe'
    $healthy = $false
    if (Test-Path $venvPy) {
        $ErrorActionPreference = 'Continue'
        & $venvPy -c 'import sys, pip; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>$null
        $healthy = ($LASTEXITCODE -eq 0)
        $ErrorActionPreference = 'Stop'
    }
    if ($healthy) {
        Write-Host "Reusing the environment in $Prefix (repair/upgrade in place)."
    } else {
        if ((Test-Path (Join-Path $Prefix 'pyvenv.cfg')) -or (Test-Path (Join-Path $Prefix 'Scripts'))) {
            Write-Host "The environment in $Prefix is broken or incomplete: rebuilding it."
            Remove-VenvParts $Prefix
        }
        Invoke-Step $py @('-m', 'venv', $Prefix)
    }
    if (-not $DryRun) {
        $stamp = (Get-Date).ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ')
        Set-Content -Path (Join-Path $Prefix $InstallMarker) -Encoding UTF8 -Value @(
            'app=sana-video-studio', "build=$build", "torch=$spec", "index=$index", "source=$target", "installed=$stamp")
    }

    $pip = @('-m', 'pip', '--disable-pip-version-check')
    $indexArgs = @()
    if ($index -ne 'default') { $indexArgs = @('--index-url', $index) }
    if ((Test-Path $venvPy) -and $index -ne 'default') {
        # a different build of the same version (+cpu vs +cu130) would count as satisfied: remove it first
        $ErrorActionPreference = 'Continue'
        $installed = & $venvPy -c 'import importlib.metadata as m; print(m.version(''torch''))' 2>$null
        $ErrorActionPreference = 'Stop'
        if ($LASTEXITCODE -eq 0 -and $installed -and -not "$installed".EndsWith("+$build")) {
            Write-Host "Installed torch $installed is not the $build build: replacing it."
            Invoke-Step $venvPy ($pip + @('uninstall', '-y', 'torch'))
        }
    }
    Invoke-Step $venvPy ($pip + @('install') + $indexArgs + @($spec))

    $constraintArgs = @()
    if (Test-Path $constraints) { $constraintArgs = @('-c', $constraints) }
    Invoke-Step $venvPy ($pip + @('install') + $constraintArgs + @("$target[$extras]"))
    # pip always reinstalls a local folder, but skips a local wheel of the version already installed
    if ($target.EndsWith('.whl')) { Invoke-Step $venvPy ($pip + @('install', '--no-deps', '--force-reinstall', $target)) }

    # no double quotes inside: Windows PowerShell 5.1 strips them from native command arguments
    Invoke-Step $venvPy @('-c', 'import torch, core; print(''torch'', torch.__version__, ''| CUDA available:'', torch.cuda.is_available(), ''| archs:'', '' ''.join(torch.cuda.get_arch_list()) or ''none'')')

    if (-not $NoLaunchers) {
        $lnk = Get-StartMenuShortcut
        $exe = Join-Path $Prefix 'Scripts\sana-video-studio.exe'
        if ($DryRun) {
            Write-Host "would write: $lnk -> $exe"
        } else {
            $shell = New-Object -ComObject WScript.Shell
            $shortcut = $shell.CreateShortcut($lnk)
            $shortcut.TargetPath = $exe
            $shortcut.WorkingDirectory = $env:USERPROFILE
            $shortcut.Description = 'Long-video generation with SANA-Video on your own GPU'
            $icon = Get-ChildItem -Path (Join-Path $Prefix 'Lib\site-packages\resources\icons') -Filter '*.ico' -ErrorAction SilentlyContinue | Select-Object -First 1
            if ($icon) { $shortcut.IconLocation = $icon.FullName }
            $shortcut.Save()
        }
    }

    Write-Host ''
    if ($DryRun) { Write-Host 'Dry run finished: nothing was changed.'; return }
    Write-Host "Done. Start 'SANA-Video Studio' from the Start menu (or $Prefix\Scripts\sana-video-studio.exe)."
    Write-Host "Check the setup with: $Prefix\Scripts\sana-video.exe doctor"
}

if ($SourceOnly) { return }
if ($Uninstall) { Invoke-Uninstall } else { Invoke-Install }
