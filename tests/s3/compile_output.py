"""Stand-ins for what a compile leaves behind, with contents that name their writer, for the S3 tier and its bench."""

from __future__ import annotations

import hashlib
import json
import pathlib

from neuron_runtime import artifacts
from neuron_runtime.compile_spec import CompileSpec


def content(label: str, name: str, size: int) -> bytes:
    """Deterministic bytes that say which publisher wrote them (the first line) and cannot be confused."""
    header = f"{label}:{name}\n".encode()
    block = hashlib.sha256(header).digest() * 2048  # 64 KiB
    body = (block * (size // len(block) + 1))[: max(0, size - len(header))]
    return header + body


def writer_of(data: bytes) -> str:
    return data.split(b"\n", 1)[0].decode().split(":", 1)[0]


def artifact_files(spec: CompileSpec, label: str, weight_size: int) -> dict:
    """What NxDI leaves for ``spec`` (neuron_config.json, model.pt, one pre-sharded checkpoint per rank)."""
    neuron_config = {"tp_degree": spec.tp_degree, "batch_size": spec.max_num_seqs, "seq_len": spec.max_model_len}
    files = {
        "neuron_config.json": json.dumps({"neuron_config": neuron_config, "publisher": label}).encode(),
        "model.pt": content(label, "model.pt", weight_size // 2),
    }
    for rank in range(spec.tp_degree):
        name = f"weights/tp{rank}_sharded_checkpoint.safetensors"
        files[name] = content(label, name, weight_size)
    return files


def builder(files: dict):
    """A BuildFn writing ``files`` (relative path -> bytes) into the staging directory."""

    def build(directory: str) -> None:
        for rel, data in files.items():
            path = pathlib.Path(directory, *rel.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    return build


def manifest_maker(key: str, spec: CompileSpec, label: str):
    def make() -> dict:
        manifest = artifacts.build_manifest(key, spec, {"vllm": "0.7.2+neuron218"}, {"save_sharded_checkpoint": True,
                                                                                       "tp_degree": spec.tp_degree})
        manifest["publisher"] = label
        return manifest

    return make


def read_tree(root) -> dict:
    root = pathlib.Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
