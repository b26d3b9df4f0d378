"""Storage: content addressing, atomic writes, never overwriting, safe names."""

from __future__ import annotations

from datetime import datetime

import pytest

from cvunet_matting.naming import safe_stem, unique_names
from cvunet_matting.storage import Storage, create_new, new_run_dir


def test_inputs_are_content_addressed_and_stored_once(tmp_path):
    storage = Storage(tmp_path)
    key = storage.put_input(b"pixels")
    assert storage.put_input(b"pixels") == key
    assert storage.read_input(key) == b"pixels"
    assert len(list(storage.inputs.rglob("*"))) == 2  # one folder, one file


def test_create_new_never_overwrites(tmp_path):
    first = create_new(tmp_path / "a.png", b"1")
    second = create_new(tmp_path / "a.png", b"2")
    assert first.read_bytes() == b"1" and second.name == "a-1.png" and second.read_bytes() == b"2"
    assert not list(tmp_path.glob(".*.part"))


def test_run_dirs_are_timestamped_and_unique(tmp_path):
    now = datetime(2026, 11, 25, 6, 30, 0)
    assert new_run_dir(tmp_path, now).name == "outputs_20261125063000"
    assert new_run_dir(tmp_path, now).name == "outputs_20261125063000-1"


def test_storage_refuses_bad_keys_and_escapes(tmp_path):
    storage = Storage(tmp_path)
    with pytest.raises(ValueError):
        storage.input_path("../../etc/passwd")
    with pytest.raises(ValueError):
        storage.resolve("../outside")


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\x\\evil.jpg", "evil"),
        ("..hidden.png", "hidden"),
        ("фото кота.jpg", "фото кота"),
        ("a/b\x00c.png", "b_c"),
        ("", "image"),
        ("...", "image"),
    ],
)
def test_safe_stem(name, stem):
    assert safe_stem(name) == stem


def test_unique_names_are_case_insensitively_unique():
    assert unique_names(["a.jpg", "A.png", "sub/a.webp"], ".png") == ["a.png", "A-1.png", "a-2.png"]
