"""A model repository in Triton's layout: ``DIR/<name>/<version>/model.keras`` (or ``.h5`` / ``.onnx``).

Versions are directories named by integers; each holds one model file, and optionally its sidecar (the
file's stem ``.json``: a vocabulary, a forecaster's feedback). ``rnnstream serve --model-repository DIR``
serves the newest version of every model; ``POST /v2/repository/models/{name}/load`` (or gRPC
``RepositoryModelLoad``) loads a model's newest version, and the server's state
(rnnstream.server.served) keeps the versions whose streams still run.

>>> import tempfile, shutil, rnnstream
>>> root = Path(tempfile.mkdtemp())
>>> for version in (1, 2):
...     _ = (root / "seed" / str(version)).mkdir(parents=True)
...     _ = shutil.copy(rnnstream.demo.SEED_MODEL, root / "seed" / str(version) / "model.keras")
>>> newest(root, "seed")[0], [spec.split("/")[-2] for spec in model_specs(root)]
(2, ['2'])
"""

from __future__ import annotations

from pathlib import Path

from rnnstream.errors import InputError

SUFFIXES = (".keras", ".h5", ".onnx")
"""The model files a version directory may hold (one of them)."""


def versions(root: Path, name: str) -> dict[int, Path]:
    """Every version of model ``name`` in the repository at ``root``: version → its model file."""
    folder = root / name
    if not folder.is_dir() or name.startswith(".") or "/" in name or name in ("", ".."):
        raise InputError(f"the model repository {root} has no model {name!r} (a folder {name}/<version>/)")
    found: dict[int, Path] = {}
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name.isdigit():
            found[int(entry.name)] = model_file(entry)
    if not found:
        raise InputError(f"model {name!r} of the repository {root} has no version: put its file in {folder}/1/")
    return found


def model_file(folder: Path) -> Path:
    """The one model file of a version's folder."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES)
    if len(files) != 1:
        raise InputError(f"{folder} must hold one model file ({', '.join(SUFFIXES)}), it holds {len(files)}")
    return files[0]


def newest(root: Path, name: str) -> tuple[int, Path]:
    """Model ``name``'s newest version and its file."""
    number = max(versions(root, name))
    return number, versions(root, name)[number]


def names(root: Path) -> list[str]:
    """The models of the repository (folders that hold at least one version)."""
    if not root.is_dir():
        raise InputError(f"the model repository {root} is not a directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(v.name.isdigit() for v in p.iterdir()))


def model_specs(root: Path | str) -> list[str]:
    """``name=file`` of each model's newest version (the specs ``rnnstream serve`` loads)."""
    root = Path(root)
    return [f"{name}={newest(root, name)[1]}" for name in names(root)]


def version_of(spec: str, root: Path | str | None) -> str:
    """The version a model spec serves: its folder's name when the spec is a repository file, else "1"."""
    if root is None or "=" not in spec:
        return "1"
    path = Path(spec.split("=", 1)[1])
    inside = Path(root).resolve() in path.resolve().parents
    return path.parent.name if inside and path.parent.name.isdigit() else "1"
