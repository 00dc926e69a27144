"""core.hub without the network: offline mode, a pre-populated cache, local folders, error translation, progress."""

from __future__ import annotations

import socket

import httpx2
import pytest
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

from core import hub
from core.errors import ModelNotFoundError, OfflineError

REPO = "Efficient-Large-Model/SANA-Video_2B_480p_diffusers"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test (tests must never touch the network)."""
    def refuse(*args, **kwargs):
        raise AssertionError("test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture()
def online(monkeypatch):
    """'Online' as far as core.hub knows; huggingface_hub calls are replaced in each test."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def populate_cache(cache_dir, files: dict[str, bytes]):
    """The huggingface_hub cache layout: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    repo_dir = cache_dir / ("models--" + REPO.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    snapshot = repo_dir / "snapshots" / COMMIT
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    return snapshot


def http_error(cls, status=404):
    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/x"))
    return cls("refused", response=response)


# ------------------------------------------------------------------------------------------------ offline
def test_offline_uncached_file_raises_offline_error(offline, tmp_path):
    with pytest.raises(OfflineError, match=r"not downloaded and this machine is offline.*sana-video models download"):
        hub.download(REPO, ["transformer/config.json"], cache_dir=tmp_path / "empty_cache")


def test_offline_uncached_snapshot_raises_offline_error(offline, tmp_path):
    with pytest.raises(OfflineError, match=REPO):
        hub.download(REPO, allow_patterns=["transformer/*"], cache_dir=tmp_path / "empty_cache")


def test_offline_repo_id_resolve_raises_offline_error(offline, tmp_path):
    with pytest.raises(OfflineError, match="pass a local folder"):
        hub.resolve(REPO, files=["model_index.json"], cache_dir=tmp_path / "empty_cache")


def test_offline_uses_the_cache(offline, tmp_path):
    snapshot = populate_cache(tmp_path, {"model_index.json": b"{}", "transformer/config.json": b"{\"a\": 1}"})
    root = hub.download(REPO, ["transformer/config.json"], cache_dir=tmp_path)
    assert (root / "transformer" / "config.json").read_bytes() == b"{\"a\": 1}"
    assert root.resolve() == snapshot.resolve()
    assert hub.download(REPO, allow_patterns=["transformer/*"], cache_dir=tmp_path).resolve() == snapshot.resolve()


def test_offline_cache_missing_one_file(offline, tmp_path):
    populate_cache(tmp_path, {"model_index.json": b"{}"})
    with pytest.raises(OfflineError, match="transformer/config.json"):
        hub.download(REPO, ["model_index.json", "transformer/config.json"], cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------------ local folders
def test_local_folder_wins_without_any_download(tmp_path, monkeypatch):
    import huggingface_hub

    def forbidden(*a, **k):
        raise AssertionError("download attempted for a local folder")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", forbidden)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", forbidden)
    folder = tmp_path / "owner" / "model"
    (folder / "transformer").mkdir(parents=True)
    assert hub.resolve(folder) == folder
    monkeypatch.chdir(tmp_path)
    assert hub.resolve("owner/model").resolve() == folder.resolve()  # a local path named like a repo id is local


def test_neither_path_nor_repo_id(tmp_path):
    with pytest.raises(ModelNotFoundError, match="neither an existing file or folder nor"):
        hub.resolve(str(tmp_path / "missing" / "deeper" / "x"))


def test_hf_url_resolves_to_the_file(offline, tmp_path):
    populate_cache(tmp_path, {"vae/Wan2.1_VAE.pth": b"w"})
    path = hub.resolve(f"hf://{REPO}/vae/Wan2.1_VAE.pth", cache_dir=tmp_path)
    assert path.read_bytes() == b"w" and path.name == "Wan2.1_VAE.pth"


# ------------------------------------------------------------------------------------------------ error translation
@pytest.mark.parametrize("error, expected, pattern", [
    (lambda: http_error(RepositoryNotFoundError), ModelNotFoundError, "does not exist"),
    (lambda: http_error(GatedRepoError, 403), ModelNotFoundError, "gated"),
    (lambda: EntryNotFoundError("no such file"), ModelNotFoundError, "has no file transformer/config.json"),
    (lambda: httpx2.ConnectError("connection refused"), OfflineError, "offline"),
    (lambda: OSError("network unreachable"), OfflineError, "offline"),
])
def test_hub_errors_become_user_errors(online, tmp_path, monkeypatch, error, expected, pattern):
    import huggingface_hub

    def failing(*a, **k):
        raise error()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing)
    with pytest.raises(expected, match=pattern):
        hub.download(REPO, ["transformer/config.json"], cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------------ progress
def test_progress_callback_gets_bytes_and_names(online, tmp_path, monkeypatch):
    """A fake hf_hub_download that drives the tqdm class the way huggingface_hub does (total, then updates)."""
    import huggingface_hub

    sizes = {"a.safetensors": 100, "sub/b.json": 10}

    def fake_download(repo_id, filename, *, revision=None, cache_dir=None, local_files_only=False, tqdm_class=None):
        assert not local_files_only
        with tqdm_class(total=sizes[filename], initial=0, desc=filename, name="huggingface_hub.http_get") as bar:
            bar.update(sizes[filename] // 2)
            bar.update(sizes[filename] - sizes[filename] // 2)
        path = tmp_path / "snap" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * sizes[filename])
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    calls = []
    root = hub.download(REPO, list(sizes), progress=lambda done, total, name: calls.append((done, total, name)),
                        file_sizes=sizes)
    assert root == tmp_path / "snap"
    assert (50, 110, "a.safetensors") in calls and (100, 110, "a.safetensors") in calls
    assert (105, 110, "sub/b.json") in calls and calls[-1] == (110, 110, "sub/b.json")
    dones = [c[0] for c in calls]
    assert dones == sorted(dones)

    calls.clear()  # without known sizes the total grows file by file
    hub.download(REPO, list(sizes), progress=lambda done, total, name: calls.append((done, total, name)))
    assert (50, 100, "a.safetensors") in calls and (105, 110, "sub/b.json") in calls


def test_repo_id_validation():
    assert hub.looks_like_repo_id(REPO)
    assert not hub.looks_like_repo_id("a/b/c")
    assert not hub.looks_like_repo_id("../x")
    assert not hub.looks_like_repo_id("/abs/path")
