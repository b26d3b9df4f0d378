"""Model manifests: how to feed a model and read its answer, kept as JSON beside each .onnx."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from cvunet_matting.errors import ModelError

BUILTIN = ("isnet-fp16", "isnet-quint8", "cvunet")


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str  # sha256 of the .onnx file once known, "" for a built-in template
    input_name: str
    layout: str  # "NCHW" (fixed size) or "HWC" (any size)
    size: tuple[int, int] | None  # (height, width) for NCHW
    color: str  # "RGB" or "BGR"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_name: str
    output_kind: str  # "alpha" (N,1,H,W) or "rgba" (H,W,4)
    output_scale: float  # divide by this to get alpha in 0..1
    source: dict | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        try:
            inp, out = d["input"], d["output"]
            manifest = cls(
                name=d["name"],
                version=d.get("version", ""),
                input_name=inp["name"],
                layout=inp["layout"].upper(),
                size=tuple(inp["size"]) if inp.get("size") else None,
                color=inp.get("color", "RGB").upper(),
                mean=tuple(inp.get("mean", (0.0, 0.0, 0.0))),
                std=tuple(inp.get("std", (1.0, 1.0, 1.0))),
                output_name=out["name"],
                output_kind=out["kind"],
                output_scale=float(out.get("scale", 1.0)),
                source=d.get("source"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"model manifest is missing or has a bad field: {exc}") from None
        manifest.validate()
        return manifest

    def validate(self) -> None:
        if self.layout not in {"NCHW", "HWC"}:
            raise ModelError(f"manifest {self.name}: layout must be NCHW or HWC, not {self.layout}")
        if self.layout == "NCHW" and not self.size:
            raise ModelError(f"manifest {self.name}: an NCHW model needs a fixed input size")
        if self.output_kind not in {"alpha", "rgba"}:
            raise ModelError(f"manifest {self.name}: output kind must be alpha or rgba")
        if self.color not in {"RGB", "BGR"}:
            raise ModelError(f"manifest {self.name}: colour order must be RGB or BGR")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {
            "name": d["name"],
            "version": d["version"],
            "source": d["source"],
            "input": {
                "name": self.input_name,
                "layout": self.layout,
                "size": self.size,
                "color": self.color,
                "mean": self.mean,
                "std": self.std,
            },
            "output": {"name": self.output_name, "kind": self.output_kind, "scale": self.output_scale},
        }


def builtin(name: str) -> Manifest:
    """The packaged template for a known model."""
    if name not in BUILTIN:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(BUILTIN)} or a path to a .onnx file")
    text = resources.files(__package__).joinpath(f"manifests/{name}.json").read_text()
    return Manifest.from_dict(json.loads(text))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def write_manifest(onnx_path: Path, manifest: Manifest) -> Path:
    path = manifest_path(onnx_path)
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return path


def guess_template(input_names: list[str]) -> Manifest:
    """Pick a built-in template from the graph's input name, for an .onnx without a manifest."""
    if "input_image" in input_names:
        return builtin("cvunet")
    if "input" in input_names:
        return builtin("isnet-fp16")
    raise ModelError(f"cannot tell how to feed a model with inputs {input_names}; write a manifest beside it")
