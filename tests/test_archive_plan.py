"""The load planner on its own: archive members in, images and layers out, no driver."""

from __future__ import annotations

import io
import json

import pytest

from winlayer._archive_members import InvalidArchive, SeekableArchive, StreamedArchive, stream_tar
from winlayer._archive_plan import chain_ids, layer_id_for, plan_images

from .imagebuild import L1, L2, L3, config_for, docker_save, make_tar, oci_layout, sha


def streamed(data: bytes) -> StreamedArchive:
    archive = StreamedArchive()
    for info, member in stream_tar(io.BytesIO(data), "none", 1 << 30):
        archive.note(info, member)
    return archive


@pytest.mark.parametrize("layout", ["legacy", "blobs", "oci"])
@pytest.mark.parametrize("access", ["streamed", "seekable"])
def test_plan_of_an_archive(layout: str, access: str) -> None:
    if layout == "oci":
        data, config = oci_layout([L1, L2, L3], compression=["none", "gzip", "zstd"])
        tags = [("example.com/app", "1.0")]
    else:
        data, config = docker_save([L1, L2, L3], tags=["app:1"], layout=layout)
        tags = [("app", "1")]
    archive = streamed(data) if access == "streamed" else SeekableArchive(io.BytesIO(data))
    (plan,) = plan_images(archive)
    assert plan.image_id == sha(config)[7:]
    assert plan.config == config
    assert (plan.os, plan.architecture) == ("windows", "amd64")
    assert plan.tags == tags
    diff_ids = [sha(layer) for layer in (L1, L2, L3)]
    assert [layer.diff_id for layer in plan.layers] == diff_ids
    chains = chain_ids(diff_ids)
    assert [layer.chain_id for layer in plan.layers] == chains
    assert [layer.parent for layer in plan.layers] == [None, *chains[:2]]
    assert layer_id_for(chains[0]) == diff_ids[0][7:]
    if layout == "oci":  # descriptors give every blob's digest and size
        assert all(layer.blob_digest and layer.blob_size for layer in plan.layers)


def test_a_config_listing_other_layers_is_refused_before_any_import() -> None:
    data, _ = docker_save([L1, L2], config=config_for([L1]))
    with pytest.raises(InvalidArchive, match="lists 1 layers but the manifest has 2"):
        plan_images(streamed(data))


def test_a_manifest_naming_a_missing_member_is_refused() -> None:
    manifest = [{"Config": "c.json", "Layers": ["missing.tar"]}]
    data = make_tar(
        [("c.json", config_for([L1])), ("manifest.json", json.dumps(manifest).encode())]
    )
    with pytest.raises(InvalidArchive, match="not in the archive") as exc:
        plan_images(streamed(data))
    assert exc.value.member == "manifest.json"
