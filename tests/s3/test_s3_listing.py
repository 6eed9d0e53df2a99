"""Listings beyond one page: S3 returns at most 1,000 keys per ListObjectsV2 call."""

from __future__ import annotations

from neuron_runtime import s3_transfer

KEYS = 1234


def test_listing_and_downloading_more_than_1000_keys(s3, bucket, tmp_path):
    keys = [f"many/{i // 100:02d}/part-{i:05d}" for i in range(KEYS)]
    s3_transfer.run_parallel([lambda k=k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode()) for k in keys], 16)
    first_page = s3.list_objects_v2(Bucket=bucket, Prefix="many/")
    assert first_page["IsTruncated"] and first_page["KeyCount"] == 1000  # the server really pages

    listed = list(s3_transfer.list_keys(s3, bucket, "many"))
    assert len(listed) == KEYS and sorted(listed) == sorted(keys)

    rels = s3_transfer.download_prefix(s3, bucket, "many", str(tmp_path / "copy"))
    assert sorted(rels) == sorted(k[len("many/") :] for k in keys)
    assert all((tmp_path / "copy" / rel).read_bytes() == f"many/{rel}".encode() for rel in rels)
