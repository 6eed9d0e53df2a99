"""Benchmark: how fast a serving pod fetches a multi-GiB artifact from S3, next to this disk's own write speed.

Starts a real S3 server (SeaweedFS on 127.0.0.1, tests/s3/seaweedfs.py), publishes an artifact of --gib GiB in
--files files through the runtime's S3Store, fetches it twice as `neuron-runtime serve` does (S3Store.fetch, files
in parallel), once more one file at a time, and writes the same bytes to the same disk with fsync. Prints MB/s
(10^6 bytes per second). Server, client and disk share this machine's cores. Measures, never asserts:
`make bench` or `python -m tests.bench.bench_s3 --gib 3 --files 6`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from neuron_runtime import artifacts, s3_transfer
from neuron_runtime.compile_spec import CompileSpec, compile_key
from neuron_runtime.stacks import NEURON_2_23_VLLM_0_7_2
from tests.s3 import seaweedfs
from tests.s3.compile_output import manifest_maker

MIB = 1 << 20
BLOCK = 8 * MIB


def random_block() -> bytes:
    # 64 MiB of random bytes, repeated: incompressible within any chunk a server stores, and cheap to produce.
    return os.urandom(64 * MIB)


def write_files(directory: Path, names: list, size: int, block: bytes, fsync: bool) -> None:
    for name in names:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            written = 0
            while written < size:
                chunk = block[written % len(block) :][: min(BLOCK, size - written)]
                f.write(chunk)
                written += len(chunk)
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def rate(total: int, seconds: float) -> str:
    return f"{total / seconds / 1e6:8.0f} MB/s  ({seconds:5.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=3.0, help="artifact size in GiB (default 3)")
    parser.add_argument("--files", type=int, default=6, help="number of weight files (default 6)")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new one under $TMPDIR)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-s3-", dir=args.dir))
    size = int(args.gib * (1 << 30)) // args.files
    total = size * args.files
    tp = args.files  # one pre-sharded checkpoint per rank, as NxDI writes them
    spec = CompileSpec.from_dict(dict(
        model_uri="hf://meta-llama/Llama-3.1-8B-Instruct", model_revision="main", instance_family="trn1", lnc=1,
        tp_degree=tp, world_size=1, max_num_seqs=4, max_model_len=1024, dtype="bfloat16",
        stack="neuron-2.23-vllm-0.7.2",
    ))  # fmt: skip
    key = compile_key(spec)
    names = [f"weights/tp{r}_sharded_checkpoint.safetensors" for r in range(tp)]
    block = random_block()
    print(f"== S3 fetch benchmark: {total / (1 << 30):.2f} GiB in {args.files} files, scratch {work}")
    server = seaweedfs.start(work / "server")
    try:
        client = server.client()
        client.create_bucket(Bucket="bench")
        store_uri = "s3://bench/artifacts"

        build_seconds = []

        def build(directory: str) -> None:
            start = time.monotonic()
            write_files(Path(directory), names, size, block, fsync=False)
            (Path(directory) / "neuron_config.json").write_text(
                '{"neuron_config": {"tp_degree": %d, "batch_size": 4, "seq_len": 1024}}' % tp)
            (Path(directory) / "model.pt").write_bytes(b"traced")
            build_seconds.append(time.monotonic() - start)

        publisher = artifacts.S3Store(store_uri, client, str(work / "compile"))
        start = time.monotonic()
        publisher.publish(key, build, manifest_maker(key, spec, "bench"), NEURON_2_23_VLLM_0_7_2)
        upload = time.monotonic() - start - build_seconds[0]

        fetches = []
        for attempt in range(2):  # the first right after publishing, as a rollout after a compile does
            server_side = artifacts.S3Store(store_uri, server.client(), str(work / "serve"))
            start = time.monotonic()
            fetched = server_side.fetch(key)
            seconds = time.monotonic() - start
            start = time.monotonic()
            os.sync()
            fetches.append((seconds, seconds + time.monotonic() - start))
            artifacts.verify_artifact_dir(fetched, key, spec, NEURON_2_23_VLLM_0_7_2)
            shutil.rmtree(work / "serve")

        publication = server_side.lookup(key)["publication"]
        start = time.monotonic()
        s3_transfer.download_prefix(client, "bench", f"artifacts/{key}/{publication}", str(work / "one-by-one"),
                                    workers=1)
        sequential = time.monotonic() - start
        shutil.rmtree(work / "one-by-one")
    finally:
        server.stop()
    shutil.rmtree(work / "server", ignore_errors=True)

    start = time.monotonic()
    write_files(work / "disk", names, size, block, fsync=True)
    disk = time.monotonic() - start
    shutil.rmtree(work)

    workers = s3_transfer.TRANSFER_WORKERS
    (first, first_synced), (second, second_synced) = fetches
    for label, seconds in (
        (f"S3Store.fetch as serve does it (up to {workers} files at once)", first),
        ("  ... until synced to disk", first_synced),
        ("S3Store.fetch again", second),
        ("  ... until synced to disk", second_synced),
        ("one file at a time (download_prefix workers=1)", sequential),
        (f"S3Store.publish upload (up to {workers} files at once)", upload),
        ("this disk: writing the same files, fsync'd", disk),
    ):
        print(f"  {label:<56}{rate(total, seconds)}")

if __name__ == "__main__":
    main()
