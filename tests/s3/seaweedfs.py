"""A real S3-compatible server for the S3 tier and `make bench`: SeaweedFS (`weed mini`, built from its Go module by
hack/testenv-build.sh) on 127.0.0.1 with free ports, a temporary data directory and one S3 identity whose keys we
choose; started and stopped by pid."""

from __future__ import annotations

import glob
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Dict, List

ROOT = pathlib.Path(__file__).resolve().parents[2]
REGION = "us-east-1"
# Every port `weed mini` listens on, each set explicitly: its defaults are fixed numbers, and an unset gRPC port
# is the HTTP port + 10000, which may be taken.
PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
)  # fmt: skip


def weed_binary() -> str:
    """Build weed if this machine has not yet (several minutes cold), and return its path."""
    out = subprocess.run([str(ROOT / "hack" / "testenv-build.sh"), "seaweedfs"], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return os.path.join(out.strip().splitlines()[-1], "weed")


def free_ports(count: int) -> List[int]:
    """Distinct free ports on 127.0.0.1 (all sockets held until every port is chosen)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class SeaweedFS:
    process: subprocess.Popen
    endpoint: str
    access_key: str
    secret_key: str
    workdir: pathlib.Path
    ports: Dict[str, int] = field(default_factory=dict)

    @property
    def log_path(self) -> pathlib.Path:
        return self.workdir / "weed.log"

    def aws_env(self) -> Dict[str, str]:
        """The standard AWS variables boto3 reads (nothing of ours): endpoint, keys, region; no config files."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=access_key or self.access_key, aws_secret_access_key=secret_key or self.secret_key,
        )  # fmt: skip

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 5) -> None:
        """SIGTERM (weed shuts its services down and removes its sockets), SIGKILL if it has not exited after
        ``grace`` seconds: after a client was killed mid-upload its volume server sometimes waits much longer,
        and the data is temporary anyway."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        for port in self.ports.values():  # gRPC sockets weed puts in /tmp by port; left behind only by a kill
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                os.unlink(path)


def start(workdir: pathlib.Path, timeout: float = 90) -> SeaweedFS:
    """Start `weed mini` with its data in ``workdir`` and wait until its S3 endpoint answers."""
    weed = weed_binary()
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "test" + secrets.token_hex(8), secrets.token_hex(20)
    identities = workdir / "s3-identities.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "tester",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))  # fmt: skip
    ports = dict(zip(PORTS, free_ports(len(PORTS))))
    args = [
        weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"-{name}={port}" for name, port in ports.items()),
        f"-s3.config={identities}", f"-filer.localSocket={workdir}/filer.sock", f"-s3.localSocket={workdir}/s3.sock",
        # Only S3 and what it needs: no WebDAV, Iceberg or Lance endpoints, no admin UI, no telemetry.
        "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-admin.port.legacy=0",
        "-master.telemetry=false",
    ]  # fmt: skip
    with open(workdir / "weed.log", "wb") as log:
        process = subprocess.Popen(args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = SeaweedFS(process, f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key, workdir, ports)
    try:
        client = server.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.list_buckets()
                return server
            except Exception as e:  # not up yet: connection refused, or the filer behind S3 still starting
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start ({e}); log:\n{server.log_tail()}") from e
                time.sleep(0.2)
    except BaseException:
        server.stop()
        raise
