"""Minimal S3 transfers for models and artifacts, on a boto3-style client passed in by the caller.

Functions take the client as an argument (only ``list_objects_v2``, ``download_file``, ``upload_file`` and
``get_object`` are used), so tests drive them with an in-memory fake and boto3 is imported only by
:func:`make_client`, lazily.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple


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
    import boto3  # lazy: only S3 stores and s3:// models need it

    return boto3.client("s3")


def list_keys(client: Any, bucket: str, prefix: str) -> Iterator[str]:
    """Every object key under ``prefix/`` (the prefix treated as a directory)."""
    dir_prefix = prefix.rstrip("/") + "/" if prefix else ""
    token: Optional[str] = None
    while True:
        kwargs = {"Bucket": bucket, "Prefix": dir_prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page = client.list_objects_v2(**kwargs)
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):  # skip "directory" placeholder objects
                yield obj["Key"]
        if not page.get("IsTruncated"):
            return
        token = page.get("NextContinuationToken")


def object_exists(client: Any, bucket: str, key: str) -> bool:
    # A listing instead of head_object, so a missing object is not an exception type we would need botocore for.
    page = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    return any(obj["Key"] == key for obj in page.get("Contents", []))


def read_object(client: Any, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def _ignored(relpath: str, ignore_patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(relpath, pattern) for pattern in ignore_patterns)


def download_prefix(
    client: Any, bucket: str, prefix: str, dest_dir: str, ignore_patterns: Sequence[str] = ()
) -> List[str]:
    """Copy every object under ``prefix/`` to ``dest_dir`` keeping relative paths; returns the relative paths."""
    dir_prefix = prefix.rstrip("/") + "/" if prefix else ""
    copied = []
    for key in list_keys(client, bucket, prefix):
        rel = key[len(dir_prefix) :]
        if _ignored(rel, ignore_patterns):
            continue
        if any(part in ("", ".", "..") for part in rel.split("/")):
            raise ValueError(f"refusing to download s3://{bucket}/{key}: unsafe relative path {rel!r}")
        target = os.path.join(dest_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        client.download_file(bucket, key, target)
        copied.append(rel)
    return copied


def local_files(root: str) -> Iterable[str]:
    """Relative paths (with "/") of every file under ``root``, sorted for a stable upload order."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(found)


def upload_dir(client: Any, src_dir: str, bucket: str, prefix: str, last: Optional[str] = None) -> None:
    """Upload every file of ``src_dir`` under ``prefix/``; the file named ``last`` (relative) goes up last,
    so a reader that sees it knows every other object is already there."""
    rels = [r for r in local_files(src_dir) if r != last]
    if last is not None:
        if not os.path.isfile(os.path.join(src_dir, last)):
            raise FileNotFoundError(f"{last} missing in {src_dir}")
        rels.append(last)
    for rel in rels:
        client.upload_file(os.path.join(src_dir, *rel.split("/")), bucket, join_key(prefix, rel))
