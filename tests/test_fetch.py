"""Model fetch: chunk reassembly and checksum refusal on a small fake npm package."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from cvunet_matting.errors import ModelError
from cvunet_matting.model import fetch


def fake_package(path, chunks: list[bytes], corrupt: bool = False):
    index = {"/models/medium": {"chunks": [], "size": sum(map(len, chunks))}}
    with tarfile.open(path, "w:gz") as tar:
        offset = 0
        for chunk in chunks:
            digest = hashlib.sha256(chunk).hexdigest()
            index["/models/medium"]["chunks"].append({"hash": digest, "offsets": [offset, offset + len(chunk)]})
            offset += len(chunk)
            body = chunk[:-1] + b"X" if corrupt else chunk
            info = tarfile.TarInfo(f"package/dist/{digest}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        raw = json.dumps(index).encode()
        info = tarfile.TarInfo("package/dist/resources.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))


def test_assemble_joins_chunks_in_order(tmp_path):
    chunks = [b"a" * 10, b"b" * 7, b"c"]
    fake_package(tmp_path / "p.tgz", chunks)
    fetch.assemble(tmp_path / "p.tgz", "/models/medium", tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx").read_bytes() == b"".join(chunks)


def test_assemble_refuses_a_corrupt_chunk(tmp_path):
    fake_package(tmp_path / "p.tgz", [b"hello", b"world"], corrupt=True)
    with pytest.raises(ModelError, match="sha256"):
        fetch.assemble(tmp_path / "p.tgz", "/models/medium", tmp_path / "out.onnx")


def test_fetch_refuses_a_package_whose_model_hash_differs(tmp_path):
    fake_package(tmp_path / "p.tgz", [b"not the real model"])
    with pytest.raises(ModelError, match="sha256"):
        fetch.fetch_model("isnet-fp16", tmp_path / "models", tarball=tmp_path / "p.tgz")
    assert not (tmp_path / "models" / "isnet-fp16.onnx").exists()


def test_fetch_skips_an_installed_model(real_model_path, monkeypatch):
    monkeypatch.setattr(fetch, "download", lambda *a: pytest.fail("must not download"))
    assert fetch.fetch_model("isnet-fp16", real_model_path.parent) == real_model_path


def test_cvunet_cannot_be_fetched(tmp_path):
    with pytest.raises(ModelError, match="convert it yourself"):
        fetch.fetch_model("cvunet", tmp_path)


def test_tarball_url():
    url = fetch.tarball_url("@imgly/background-removal-data", "1.4.5", "https://registry.npmjs.org/")
    assert url == "https://registry.npmjs.org/@imgly/background-removal-data/-/background-removal-data-1.4.5.tgz"
