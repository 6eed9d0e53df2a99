"""S3 transfers for models and artifacts, on a boto3 S3 client passed in by the caller.

Functions take the client as an argument, so unit tests can drive them with an in-memory fake; boto3 is imported
only by :func:`make_client`, lazily. Endpoint, credentials and region come from boto3's own configuration chain,
nothing of ours: ``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3`` (or ``endpoint_url`` in ``~/.aws/config``) for an
S3-compatible server (AWS SDKs and Tools Reference Guide, "Service-specific endpoints",
https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html), ``AWS_ACCESS_KEY_ID``
/ ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, IRSA and instance roles.

Many files move in parallel on a bounded thread pool (boto3 clients are thread-safe). Errors boto3 raises become
:class:`S3AccessError` with the bucket, the endpoint and what to check, instead of a botocore traceback.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from neuron_runtime.errors import RuntimeFailure

# Files in flight at once. Each file larger than boto3's multipart threshold (8 MiB) is itself split into parts
# that boto3's transfer manager moves on up to 10 threads, so the client's connection pool is sized to match.
TRANSFER_WORKERS = 8
_PARTS_PER_FILE = 10
# S3 answers 409 ConditionalRequestConflict when two conditional writes of one key overlap; it asks for a retry.
_CONFLICT_RETRIES = 5


class S3AccessError(RuntimeFailure):
    """S3 refused or could not serve a request: credentials, permissions, endpoint, bucket or network."""


def parse_s3_uri(uri: str) -> Tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ("bucket", "some/prefix"), without leading or trailing slashes."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri!r}")
    return bucket, prefix.strip("/")


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def make_client() -> Any:
    # lazy: only S3 stores and s3:// models need boto3. Config is botocore's, as boto3.session imports it.
    from boto3.session import Config, Session

    # A session of its own rather than boto3's process-wide default one, which caches the credentials it first
    # resolved: each client reads the environment and the credential chain afresh.
    session = Session()
    return session.client("s3", config=Config(max_pool_connections=TRANSFER_WORKERS * _PARTS_PER_FILE))


# --- errors ----------------------------------------------------------------------------------------------------

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired",
    "AuthorizationHeaderMalformed", "InvalidClientTokenId",
}  # fmt: skip
_FORBIDDEN_CODES = {"AccessDenied", "AllAccessDisabled", "403"}  # "403": a HEAD response has no error body
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"}


def _is_boto_error(error: BaseException) -> bool:
    return type(error).__module__.split(".")[0] in ("botocore", "boto3", "s3transfer")


def describe_error(error: BaseException, client: Any, bucket: str, key: str = "", action: str = "") -> Optional[str]:
    """A one-line message for an error boto3 raised (None for anything else): what failed where, what to check.

    Classified by botocore's exception class names and S3 error codes, so botocore need not be imported here.
    """
    if not _is_boto_error(error):
        return None
    # upload_file wraps the ClientError it got in boto3's S3UploadFailedError
    inner = error.__cause__ or error.__context__
    if type(error).__name__ == "S3UploadFailedError" and inner is not None and _is_boto_error(inner):
        error = inner
    meta = getattr(client, "meta", None)
    endpoint = getattr(meta, "endpoint_url", None) or "the default AWS endpoint"
    region = getattr(meta, "region_name", None)
    where = f"s3://{join_key(bucket, key)}" if key else f"bucket {bucket}"
    at = f"{endpoint}" + (f" (region {region})" if region else "")
    doing = f"{action} of {where}" if action else where
    names = {cls.__name__ for cls in type(error).__mro__}
    response = getattr(error, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code") or "")
    detail = str((response.get("Error") or {}).get("Message") or "") or str(error)
    if "NoCredentialsError" in names or "PartialCredentialsError" in names:
        return (
            f"no AWS credentials for {doing} at {at}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give the "
            "pod an IAM role (IRSA / EKS Pod Identity)"
        )
    if names & _UNREACHABLE:
        return f"cannot reach the S3 endpoint {at} for {doing} ({error}); check AWS_ENDPOINT_URL and the network"
    if code in _CREDENTIAL_CODES:
        return (
            f"S3 at {at} rejected the credentials for {doing} ({code}: {detail}); check AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or the pod's IAM role) and that AWS_ENDPOINT_URL is the server they belong to"
        )
    if code in _FORBIDDEN_CODES:
        return (
            f"S3 at {at} denied {doing} ({code}: {detail}); check the credentials (AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY or the pod's IAM role) and that their policy allows s3:ListBucket, "
            f"s3:GetObject, s3:PutObject and s3:DeleteObject on {bucket}"
        )
    if code == "NoSuchBucket":
        return f"bucket {bucket} does not exist at {at}; create it, or fix the s3:// URI or AWS_ENDPOINT_URL"
    if code:
        return f"S3 at {at} failed {doing} ({code}: {detail})"
    return f"S3 {doing} at {at} failed: {error}"


@contextlib.contextmanager
def _translated(client: Any, bucket: str, key: str, action: str) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        message = describe_error(e, client, bucket, key, action)
        if message is None:
            raise
        raise S3AccessError(message) from e


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


# --- listing and single objects --------------------------------------------------------------------------------


def list_keys(client: Any, bucket: str, prefix: str) -> Iterator[str]:
    """Every object key under ``prefix/`` (the prefix treated as a directory), across all listing pages."""
    dir_prefix = prefix.rstrip("/") + "/" if prefix else ""
    token: Optional[str] = None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": dir_prefix}
        if token:
            kwargs["ContinuationToken"] = token
        with _translated(client, bucket, dir_prefix, "listing"):
            page = client.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):  # skip "directory" placeholder objects
                yield obj["Key"]
        if not page.get("IsTruncated"):
            return
        token = page.get("NextContinuationToken")


def object_exists(client: Any, bucket: str, key: str) -> bool:
    # A listing instead of head_object, so a missing object is not an exception type we would need botocore for.
    with _translated(client, bucket, key, "listing"):
        page = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    return any(obj["Key"] == key for obj in page.get("Contents", []))


def read_object(client: Any, bucket: str, key: str) -> bytes:
    with _translated(client, bucket, key, "download"):
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def put_if_absent(client: Any, bucket: str, key: str, body: bytes) -> bool:
    """Create ``key`` only if no object has that key (S3 conditional write, ``If-None-Match: *``).

    True if this call created it, False if the key already existed: of concurrent callers exactly one gets True.
    """
    attempt = 0
    while True:
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            return True
        except Exception as e:
            code = _error_code(e)
            if code == "PreconditionFailed":
                return False
            if code == "ConditionalRequestConflict" and attempt < _CONFLICT_RETRIES:
                attempt += 1
                time.sleep(0.1 * 2**attempt)
                continue
            message = describe_error(e, client, bucket, key, "conditional upload")
            if message is None:
                raise
            raise S3AccessError(message) from e


def delete_prefix(client: Any, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix/``; returns how many."""
    keys = list(list_keys(client, bucket, prefix))
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
        batch = keys[start : start + 1000]
        with _translated(client, bucket, prefix, "deletion"):
            result = client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
        errors = result.get("Errors") or []
        if errors:
            first = errors[0]
            raise S3AccessError(
                f"deleting {len(errors)} objects under s3://{join_key(bucket, prefix)}/ failed, first "
                f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')}"
            )
    return len(keys)


# --- many files ------------------------------------------------------------------------------------------------


def run_parallel(jobs: Sequence[Callable[[], None]], workers: int = TRANSFER_WORKERS) -> None:
    """Run ``jobs`` on at most ``workers`` threads and return when every one has finished.

    On the first failure no further job starts, the running ones finish, and that failure is raised, so
    nothing of this call is still writing when it returns or raises.
    """
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="s3") as pool:
        futures = [pool.submit(job) for job in jobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            pool.shutdown(wait=True, cancel_futures=True)
            raise failed[0].exception()  # type: ignore[misc]


def _ignored(relpath: str, ignore_patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(relpath, pattern) for pattern in ignore_patterns)


def download_prefix(
    client: Any,
    bucket: str,
    prefix: str,
    dest_dir: str,
    ignore_patterns: Sequence[str] = (),
    workers: int = TRANSFER_WORKERS,
) -> List[str]:
    """Copy every object under ``prefix/`` to ``dest_dir`` keeping relative paths, ``workers`` files at a time;
    returns the relative paths."""
    dir_prefix = prefix.rstrip("/") + "/" if prefix else ""
    planned = []
    for key in list_keys(client, bucket, prefix):
        rel = key[len(dir_prefix) :]
        if _ignored(rel, ignore_patterns):
            continue
        if any(part in ("", ".", "..") for part in rel.split("/")):
            raise ValueError(f"refusing to download s3://{bucket}/{key}: unsafe relative path {rel!r}")
        planned.append((key, rel, os.path.join(dest_dir, *rel.split("/"))))
    for _key, _rel, target in planned:
        os.makedirs(os.path.dirname(target), exist_ok=True)

    def job(key: str, target: str) -> Callable[[], None]:
        def download() -> None:
            with _translated(client, bucket, key, "download"):
                client.download_file(bucket, key, target)

        return download

    run_parallel([job(key, target) for key, _rel, target in planned], workers)
    return [rel for _key, rel, _target in planned]


def local_files(root: str) -> Iterable[str]:
    """Relative paths (with "/") of every file under ``root``, sorted for a stable upload order."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(found)


def upload_dir(
    client: Any,
    src_dir: str,
    bucket: str,
    prefix: str,
    last: Optional[str] = None,
    exclude: Sequence[str] = (),
    workers: int = TRANSFER_WORKERS,
) -> None:
    """Upload every file of ``src_dir`` (but ``exclude``, relative paths) under ``prefix/``, ``workers`` at a time.

    The file named ``last`` (relative) goes up only after every other upload has completed, so a reader that sees
    it knows every other object is already there.
    """
    rels = [r for r in local_files(src_dir) if r != last and r not in exclude]
    if last is not None and not os.path.isfile(os.path.join(src_dir, last)):
        raise FileNotFoundError(f"{last} missing in {src_dir}")

    def job(rel: str) -> Callable[[], None]:
        def upload() -> None:
            key = join_key(prefix, rel)
            with _translated(client, bucket, key, "upload"):
                client.upload_file(os.path.join(src_dir, *rel.split("/")), bucket, key)

        return upload

    run_parallel([job(rel) for rel in rels], workers)
    if last is not None:
        job(last)()
