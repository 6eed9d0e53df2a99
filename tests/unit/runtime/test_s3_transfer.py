"""s3_transfer on its own: parallel transfers (bounded, the `last` file strictly after the others, failures stop
the rest), conditional creation, batched deletion, and the one-line messages for boto3's errors. The S3 tier
(tests/s3) runs the same code against a real server; this file pins down orderings a server does not show."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from neuron_runtime import s3_transfer
from neuron_runtime.errors import RuntimeFailure


def client_error(code: str, message: str = "message from S3", operation: str = "PutObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


class RecordingClient:
    """Records when each transfer started and ended; transfers take ``delay`` seconds; ``fail`` keys raise."""

    def __init__(self, delay: float = 0.05, fail=(), objects=None) -> None:
        self.delay, self.fail = delay, set(fail)
        self.objects = dict(objects or {})
        self.lock = threading.Lock()
        self.events: list = []  # (time, "start" | "end", key)
        self.in_flight = self.max_in_flight = 0
        self.put_errors: list = []
        self.deleted: list = []

    def _transfer(self, key: str) -> None:
        with self.lock:
            self.events.append((time.monotonic(), "start", key))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if key in self.fail:
                raise client_error("InternalError", operation="PutObject")
        finally:
            with self.lock:
                self.in_flight -= 1
                self.events.append((time.monotonic(), "end", key))

    def upload_file(self, Filename, Bucket, Key):
        self._transfer(Key)
        with open(Filename, "rb") as f:
            self.objects[Key] = f.read()

    def download_file(self, Bucket, Key, Filename):
        self._transfer(Key)
        with open(Filename, "wb") as f:
            f.write(self.objects[Key])

    def list_objects_v2(self, Bucket, Prefix="", ContinuationToken=None, MaxKeys=1000):
        keys = sorted(k for k in self.objects if k.startswith(Prefix))
        start = int(ContinuationToken or 0)
        page = {"Contents": [{"Key": k} for k in keys[start : start + MaxKeys]]}
        if start + MaxKeys < len(keys):
            page.update(IsTruncated=True, NextContinuationToken=str(start + MaxKeys))
        return page

    def put_object(self, Bucket, Key, Body, IfNoneMatch=None):
        if self.put_errors:
            raise self.put_errors.pop(0)
        if IfNoneMatch == "*" and Key in self.objects:
            raise client_error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
        self.objects[Key] = Body

    def delete_objects(self, Bucket, Delete):
        batch = [o["Key"] for o in Delete["Objects"]]
        assert len(batch) <= 1000
        self.deleted.append(batch)
        for key in batch:
            self.objects.pop(key, None)
        return {}

    def started(self, key: str) -> float:
        return next(t for t, what, k in self.events if what == "start" and k == key)

    def ended(self, key: str) -> float:
        return next(t for t, what, k in self.events if what == "end" and k == key)


def write_files(root, count: int) -> list:
    names = [f"weights/tp{i}_sharded_checkpoint.safetensors" for i in range(count)]
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    (root / "manifest.json").write_text("{}")
    return names


def test_upload_dir_is_parallel_bounded_and_puts_last_after_every_other_upload_ended(tmp_path):
    names = write_files(tmp_path, 12)
    client = RecordingClient()
    s3_transfer.upload_dir(client, str(tmp_path), "b", "p/key", last="manifest.json", workers=4)
    assert set(client.objects) == {f"p/key/{n}" for n in names} | {"p/key/manifest.json"}
    assert 2 <= client.max_in_flight <= 4
    assert client.started("p/key/manifest.json") >= max(client.ended(f"p/key/{n}") for n in names)


def test_upload_dir_can_leave_files_out(tmp_path):
    names = write_files(tmp_path, 3)
    client = RecordingClient(delay=0)
    s3_transfer.upload_dir(client, str(tmp_path), "b", "p", exclude=["manifest.json"])
    assert set(client.objects) == {f"p/{n}" for n in names}


def test_a_failed_upload_stops_the_rest_and_the_last_file_never_goes_up(tmp_path):
    names = write_files(tmp_path, 20)
    client = RecordingClient(fail={f"p/{names[1]}"})
    with pytest.raises(s3_transfer.S3AccessError, match=r"InternalError"):
        s3_transfer.upload_dir(client, str(tmp_path), "b", "p", last="manifest.json", workers=2)
    started = [k for _, what, k in client.events if what == "start"]
    assert "p/manifest.json" not in started
    assert len(started) < 20  # what had not started when the failure came never started
    assert client.in_flight == 0  # and nothing is still running once upload_dir has raised


def test_download_prefix_is_parallel_and_checks_every_key_before_downloading(tmp_path):
    client = RecordingClient(objects={f"m/llama/part-{i}": b"%d" % i for i in range(9)})
    rels = s3_transfer.download_prefix(client, "b", "m/llama", str(tmp_path / "out"), workers=3)
    assert sorted(rels) == sorted(f"part-{i}" for i in range(9))
    assert all((tmp_path / "out" / f"part-{i}").read_bytes() == b"%d" % i for i in range(9))
    assert 2 <= client.max_in_flight <= 3

    unsafe = RecordingClient(objects={"m/a": b"", "m/x/../../etc/passwd": b""})
    with pytest.raises(ValueError, match="unsafe relative path"):
        s3_transfer.download_prefix(unsafe, "b", "m", str(tmp_path / "unsafe"))
    assert unsafe.events == []


def test_put_if_absent_lets_exactly_one_caller_create(tmp_path):
    client = RecordingClient()
    assert s3_transfer.put_if_absent(client, "b", "k/manifest.json", b"first") is True
    assert s3_transfer.put_if_absent(client, "b", "k/manifest.json", b"second") is False
    assert client.objects["k/manifest.json"] == b"first"


def test_put_if_absent_retries_a_conditional_conflict_and_reports_other_errors(monkeypatch):
    monkeypatch.setattr(s3_transfer.time, "sleep", lambda seconds: None)
    client = RecordingClient()
    client.put_errors = [client_error("ConditionalRequestConflict")] * 2
    assert s3_transfer.put_if_absent(client, "b", "k", b"x") is True
    client.put_errors = [client_error("AccessDenied", "Access Denied")]
    with pytest.raises(s3_transfer.S3AccessError, match=r"denied conditional upload of s3://b/k2 \(AccessDenied"):
        s3_transfer.put_if_absent(client, "b", "k2", b"x")


def test_delete_prefix_deletes_in_batches_of_1000():
    client = RecordingClient(objects={f"p/pub/{i:05d}": b"" for i in range(2500)} | {"p/other": b""})
    assert s3_transfer.delete_prefix(client, "b", "p/pub") == 2500
    assert [len(batch) for batch in client.deleted] == [1000, 1000, 500]
    assert set(client.objects) == {"p/other"}


def test_run_parallel_with_nothing_to_do():
    s3_transfer.run_parallel([])


# --- messages for boto3's errors ----------------------------------------------------------------------------------


@pytest.fixture
def real_client():
    """A boto3 client that is never called: describe_error reads only its endpoint and region."""
    return boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="eu-west-1",
                        aws_access_key_id="a", aws_secret_access_key="b")


@pytest.mark.parametrize(
    "error, expected",
    [
        (client_error("InvalidAccessKeyId", operation="ListObjectsV2"),
         ["rejected the credentials for listing of s3://bkt/p/k", "InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"]),
        (client_error("SignatureDoesNotMatch"), ["rejected the credentials", "AWS_SECRET_ACCESS_KEY"]),
        (client_error("403", "Forbidden", "HeadObject"), ["denied listing of s3://bkt/p/k (403: Forbidden)",
                                                          "s3:GetObject", "on bkt"]),
        (client_error("NoSuchBucket"), ["bucket bkt does not exist at http://127.0.0.1:9"]),
        (client_error("SlowDown", "Please reduce your request rate"), ["failed listing of s3://bkt/p/k (SlowDown"]),
        (NoCredentialsError(), ["no AWS credentials for listing of s3://bkt/p/k", "IRSA"]),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), ["cannot reach the S3 endpoint",
                                                                      "AWS_ENDPOINT_URL"]),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)  # fmt: skip
def test_boto_errors_become_one_line_messages(real_client, error, expected):
    message = s3_transfer.describe_error(error, real_client, "bkt", "p/k", "listing")
    assert "\n" not in message and "http://127.0.0.1:9 (region eu-west-1)" in message
    for text in expected:
        assert text in message, message


def test_an_upload_error_is_described_by_the_s3_error_inside_it(real_client):
    try:
        try:
            raise client_error("InvalidAccessKeyId", operation="CreateMultipartUpload")
        except ClientError as inner:
            raise S3UploadFailedError(f"Failed to upload x to bkt/k: {inner}")
    except S3UploadFailedError as e:
        message = s3_transfer.describe_error(e, real_client, "bkt", "k", "upload")
    assert message.startswith("S3 at http://127.0.0.1:9 (region eu-west-1) rejected the credentials for upload")


def test_other_errors_are_left_alone(real_client, tmp_path):
    assert s3_transfer.describe_error(ValueError("x"), real_client, "bkt") is None
    assert issubclass(s3_transfer.S3AccessError, RuntimeFailure)

    class Broken(RecordingClient):
        def get_object(self, Bucket, Key):
            raise KeyError(Key)  # a bug, not an S3 answer: propagates as it is

    with pytest.raises(KeyError):
        s3_transfer.read_object(Broken(), "b", "k")
