"""The artifact: a directory holding one shared library and a JSON manifest describing it.

    OUT/
      model.so        the Relax VM executable (kernels + constants), from ``export_library``
      manifest.json   inputs, outputs, target, pipeline, source, package versions, sha256 of model.so,
                      and the sha256 of the manifest's own content (``manifest_sha256``)

Writing is atomic: everything goes to a sibling temporary directory that is renamed into place, so a
failure leaves no partial artifact. Loading checks the manifest's keys, its own checksum (an edited input
shape would make the library read the wrong memory) and the library's checksum before loading it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from .errors import ArtifactError

FORMAT_VERSION = 2  # 2: the manifest checksums its own content
REQUIRED_KEYS = ("inputs", "outputs", "library", "manifest_sha256")
LIBRARY = "model.so"
MANIFEST = "manifest.json"


def package_versions() -> dict[str, str]:
    """Versions of the packages that shaped the artifact (absent ones are left out)."""
    versions = {}
    for name in ("qcompiler", "apache-tvm", "apache-tvm-ffi", "numpy", "onnx", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; on success it replaces ``out``, on failure it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not (out / MANIFEST).is_file():
        raise ArtifactError(f"{out} exists and is not an artifact; refusing to overwrite it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    library = directory / LIBRARY
    manifest = dict(manifest, format_version=FORMAT_VERSION,
                    library={"file": LIBRARY, "sha256": sha256(library), "bytes": library.stat().st_size})
    manifest.pop("manifest_sha256", None)
    manifest["manifest_sha256"] = _content_sha256(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _content_sha256(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its own checksum, keys sorted (formatting does not count)."""
    content = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def read_manifest(path: Path, *, verify: bool = True) -> dict[str, Any]:
    """The manifest of the artifact at ``path``; with ``verify``, check the library's sha256 against it."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.exists():
        raise ArtifactError(f"artifact not found: {path}")
    if not manifest_path.is_file():
        raise ArtifactError(f"{path} is not an artifact (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format {manifest.get('format_version')!r}, "
                            f"this compiler reads format {FORMAT_VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ArtifactError(f"{manifest_path} lacks {', '.join(missing)}: the manifest was edited or is corrupt")
    if verify:
        if manifest["manifest_sha256"] != _content_sha256(manifest):
            raise ArtifactError(f"{manifest_path}: checksum mismatch: the manifest was edited after compilation "
                                "(recompile rather than edit it)")
        library = path / manifest["library"]["file"]
        if not library.is_file():
            raise ArtifactError(f"{path}: library {library.name} is missing")
        actual = sha256(library)
        if actual != manifest["library"]["sha256"]:
            raise ArtifactError(f"{path}: checksum mismatch for {library.name} (manifest "
                                f"{manifest['library']['sha256'][:12]}..., file {actual[:12]}...): "
                                "the artifact was modified or is corrupt")
    return manifest
