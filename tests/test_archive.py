"""Image archives: load (docker save, OCI layout), save, and the round trip between them.

Archives are built here with tarfile, independently of winlayer's writer.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import IO, Any, cast

import pytest

from winlayer import DigestMismatch, Driver, InvalidLayer, WinlayerError
from winlayer.driver import Diff
from winlayer.images import (
    ImageNotFound,
    ImageStore,
    InvalidArchive,
    chain_ids,
    layer_id_for,
    load,
    save,
)

from . import stores
from .imagebuild import (
    L1,
    L2,
    L3,
    Pipe,
    compress,
    config_for,
    docker_save,
    make_tar,
    oci_layout,
    sha,
    write,
)
from .layerbuild import d, f, layer_tar, link
from .stores import assert_pristine, check_loaded, staging_empty

driver = stores.driver
store = stores.store


def test_chain_ids_follow_the_oci_rule() -> None:
    a, b, c = sha(b"a"), sha(b"b"), sha(b"c")
    ab = sha(f"{a} {b}".encode())
    assert chain_ids([a, b, c]) == [a, ab, sha(f"{ab} {c}".encode())]
    assert chain_ids([]) == []


@pytest.mark.parametrize("layout", ["legacy", "blobs"])
def test_load_docker_save(driver: Driver, store: ImageStore, tmp_path: Path, layout: str) -> None:
    data, config = docker_save([L1, L2], tags=["example.com/app:1.0"], layout=layout)
    images = load(driver, store, write(tmp_path, data))
    assert [i.id for i in images] == [sha(config)[7:]]
    assert images[0].tags == ("example.com/app:1.0",)
    assert images[0].architecture == "amd64"
    assert images[0].os == "windows"
    assert images[0].created == "2024-05-01T10:00:00Z"
    check_loaded(driver, store, [L1, L2], config)
    assert store.resolve("example.com/app:1.0") == images[0].id


@pytest.mark.parametrize("compression", [["gzip", "zstd"], ["zstd", "none"], ["none", "gzip"]])
def test_load_oci_layout_with_compressed_layers(
    driver: Driver, store: ImageStore, tmp_path: Path, compression: list[str]
) -> None:
    data, config = oci_layout([L1, L2], compression=compression)
    images = load(driver, store, write(tmp_path, data))
    assert images[0].tags == ("example.com/app:1.0",)
    check_loaded(driver, store, [L1, L2], config)


def test_oci_ref_name_holding_only_a_tag_tags_nothing(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    data, _ = oci_layout([L1], ref="1.0")
    images = load(driver, store, write(tmp_path, data), tag="mine:x")
    assert images[0].tags == ("mine:x",)


@pytest.mark.parametrize("outer", ["gzip", "zstd"])
@pytest.mark.parametrize("layers_first", [True, False])
def test_compressed_outer_archive(
    driver: Driver, store: ImageStore, tmp_path: Path, outer: str, layers_first: bool
) -> None:
    data, config = docker_save(
        [L1, L2, L3], compression=["gzip", "none", "zstd"], layers_first=layers_first
    )
    load(driver, store, write(tmp_path, compress(data, outer), "image.tar.x"))
    check_loaded(driver, store, [L1, L2, L3], config)
    assert staging_empty(driver)


def test_compressed_archive_with_layers_out_of_chain_order(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    # The top layer comes first in the archive: it is held in staging until its parent
    # has been imported.
    config = config_for([L1, L2, L3])
    blobs = {name: layer for name, layer in zip("abc", [L1, L2, L3], strict=True)}
    manifest = [
        {"Config": "c.json", "RepoTags": ["app:latest"], "Layers": ["a.tar", "b.tar", "c.tar"]}
    ]
    data = make_tar(
        [
            ("c.tar", blobs["c"]),
            ("a.tar", blobs["a"]),
            ("b.tar", blobs["b"]),
            ("c.json", config),
            ("manifest.json", json.dumps(manifest).encode()),
        ]
    )
    images = load(driver, store, write(tmp_path, gzip.compress(data)))
    check_loaded(driver, store, [L1, L2, L3], config)
    assert images[0].tags == ("app:latest",)


@pytest.mark.parametrize("outer", ["none", "gzip"])
def test_load_from_a_pipe(driver: Driver, store: ImageStore, outer: str) -> None:
    data, config = docker_save([L1, L2], compression=["none", "gzip"])
    pipe = Pipe(compress(data, outer))
    load(driver, store, cast(IO[bytes], pipe))  # a raw stream, as users pass
    check_loaded(driver, store, [L1, L2], config)
    assert not pipe.closed  # the caller's stream is the caller's to close


def test_load_from_a_seekable_stream(driver: Driver, store: ImageStore) -> None:
    data, config = oci_layout([L1, L2], compression=["zstd", "gzip"])
    load(driver, store, io.BytesIO(data))
    check_loaded(driver, store, [L1, L2], config)


def test_progress_reports_blob_bytes(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    data, _ = oci_layout([L1, L2], compression=["gzip", "none"])
    seen: list[tuple[int, int]] = []
    load(
        driver,
        store,
        write(tmp_path, data),
        progress=lambda done, total: seen.append((done, total)),
    )
    total = len(gzip.compress(L1, mtime=0)) + len(L2)
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_diff_id_mismatch_leaves_nothing(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    config = config_for([L1, L3])  # the second layer in the archive is L2, not L3
    data, _ = docker_save([L1, L2], config=config)
    with pytest.raises(DigestMismatch) as caught:
        load(driver, store, write(tmp_path, data))
    assert caught.value.expected == sha(L3)
    assert caught.value.actual == sha(L2)
    assert caught.value.subject == f"the layer in '{sha(L2)[7:]}.tar'"  # the member itself
    assert_pristine(driver, store)


@pytest.mark.parametrize("outer", ["none", "gzip"])
def test_blob_digest_mismatch_leaves_nothing(
    driver: Driver, store: ImageStore, tmp_path: Path, outer: str
) -> None:
    # The compressed blob of the second layer is not the one its descriptor names, though
    # it decompresses to the right diffID: the blob digest alone catches it.
    wrong = sha(b"something else")
    data, _ = oci_layout([L1, L2], compression=["gzip", "gzip"], tamper={"1.digest": wrong})
    blob2 = gzip.compress(L2, mtime=0)
    with pytest.raises(DigestMismatch) as caught:
        load(driver, store, write(tmp_path, compress(data, outer)))
    assert caught.value.expected == wrong
    assert caught.value.actual == sha(blob2)
    assert caught.value.subject == f"blob 'blobs/sha256/{wrong[7:]}'"
    assert str(caught.value).startswith(f"digest mismatch of blob 'blobs/sha256/{wrong[7:]}'")
    assert_pristine(driver, store)


def test_blob_size_mismatch_is_refused_before_importing(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    data, _ = oci_layout([L1], tamper={"0.size": len(L1) + 1})
    with pytest.raises(InvalidArchive, match="descriptor says"):
        load(driver, store, write(tmp_path, data))
    assert_pristine(driver, store)


def test_tampered_config_is_refused(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    data, config = docker_save([L1], layout="blobs")
    forged = config.replace(b"amd64", b"arm64")
    data = make_tar(
        [
            (f"blobs/sha256/{sha(L1)[7:]}", L1),
            (f"blobs/sha256/{sha(config)[7:]}", forged),
            (
                "manifest.json",
                json.dumps(
                    [
                        {
                            "Config": f"blobs/sha256/{sha(config)[7:]}",
                            "Layers": [f"blobs/sha256/{sha(L1)[7:]}"],
                        }
                    ]
                ).encode(),
            ),
        ]
    )
    with pytest.raises(InvalidArchive, match="does not match its digest") as caught:
        load(driver, store, write(tmp_path, data))
    assert caught.value.member == f"blobs/sha256/{sha(config)[7:]}"
    assert_pristine(driver, store)


def test_corrupt_compressed_layer_names_the_blob(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    data, _ = docker_save([L1, L2], compression=["none", "gzip"], layout="blobs")
    blob = gzip.compress(L2, mtime=0)
    broken = blob[:40] + bytes(len(blob) - 80) + blob[-40:]
    path = f"blobs/sha256/{sha(blob)[7:]}"
    # Keep the name (and so the promised digest): the corruption must be found by reading.
    data = data.replace(blob, broken)
    with pytest.raises(InvalidLayer, match="corrupt gzip data") as caught:
        load(driver, store, write(tmp_path, data))
    assert caught.value.entry == path
    assert_pristine(driver, store)


MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ZEROS = layer_tar([d("Files"), f("Files/zeros.bin", bytes(16 << 20))])  # 16 MiB tar
LIMIT = 4 << 20


@pytest.fixture
def limited(tmp_path: Path, backend_name: str) -> Driver:
    """A driver whose layers may expand to 4 MiB."""
    home, base = tmp_path / "home", tmp_path / "base"
    return Driver(home, backend=backend_name, base_images=base, max_layer_size="4MiB")


@pytest.mark.parametrize("outer", ["none", "gzip"])
@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_a_compressed_layer_in_an_archive_obeys_the_size_limit(
    limited: Driver, tmp_path: Path, how: str, outer: str
) -> None:
    data, _ = docker_save([L1, ZEROS], compression=["none", how], layout="blobs")
    blob = compress(ZEROS, how)
    assert len(blob) < LIMIT // 100
    with ImageStore(limited.home) as store:
        with pytest.raises(InvalidLayer, match=f"{how} data expands past the limit of {LIMIT}"):
            load(limited, store, write(tmp_path, compress(data, outer)))
        assert_pristine(limited, store)


@pytest.mark.parametrize("source", ["file", "pipe"])
def test_a_member_of_a_compressed_archive_obeys_the_size_limit(
    limited: Driver, tmp_path: Path, source: str
) -> None:
    # A plain layer in a gzip archive is expanded by the archive's decompression.
    data, _ = docker_save([L1, ZEROS], layout="blobs")
    packed = gzip.compress(data)
    archive: Any = write(tmp_path, packed) if source == "file" else Pipe(packed)
    with ImageStore(limited.home) as store:
        expected = f"more than a layer may expand to \\({LIMIT} bytes"
        with pytest.raises(InvalidArchive, match=expected) as caught:
            load(limited, store, archive)
        assert caught.value.member == f"blobs/sha256/{sha(ZEROS)[7:]}"
        assert_pristine(limited, store)


@pytest.mark.parametrize("count", [126, 10_000])
@pytest.mark.parametrize("layout", ["docker", "oci"])
def test_an_image_deeper_than_125_layers_is_refused_before_importing(
    driver: Driver, store: ImageStore, tmp_path: Path, count: int, layout: str
) -> None:
    # One small layer listed `count` times: each copy is a layer of its own in the chain.
    blob = f"blobs/sha256/{sha(L1)[7:]}"
    config = config_for([L1] * count)
    config_path = f"blobs/sha256/{sha(config)[7:]}"
    members: list[tuple[str, Any]] = [(blob, L1), (config_path, config)]
    if layout == "docker":
        manifest = [{"Config": config_path, "Layers": [blob] * count}]
        members.append(("manifest.json", json.dumps(manifest).encode()))
    else:
        oci = {
            "schemaVersion": 2,
            "config": {"mediaType": MT_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": MT_LAYER, "digest": sha(L1), "size": len(L1)}] * count,
        }
        oci_bytes = json.dumps(oci).encode()
        index = {
            "manifests": [
                {"mediaType": MT_MANIFEST, "digest": sha(oci_bytes), "size": len(oci_bytes)}
            ]
        }
        members += [
            (f"blobs/sha256/{sha(oci_bytes)[7:]}", oci_bytes),
            ("index.json", json.dumps(index).encode()),
        ]
    data = make_tar(members)
    with pytest.raises(InvalidArchive) as caught:
        load(driver, store, write(tmp_path, data))
    assert caught.value.reason == (
        f"image {sha(config)[7:]} has {count} layers; a layer chain holds at most 125"
    )
    assert caught.value.member == f"blobs/sha256/{sha(config)[7:]}"
    assert_pristine(driver, store)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"Config": "c.json", "Layers": ["missing.tar"]}, "which is not in the archive"),
        ({"Config": "c.json", "Layers": []}, "lists 1 layers but the manifest has 0"),
        ({"Config": "../c.json", "Layers": ["a.tar"]}, "outside the archive"),
        ({"Layers": ["a.tar"]}, "needs Config"),
        (
            {"Config": "c.json", "Layers": ["a.tar"], "RepoTags": ["Bad Name:1"]},
            "invalid repository",
        ),
    ],
)
def test_bad_manifest_is_refused_before_importing(
    driver: Driver, store: ImageStore, tmp_path: Path, manifest: dict[str, Any], message: str
) -> None:
    data = make_tar(
        [
            ("a.tar", L1),
            ("c.json", config_for([L1])),
            ("manifest.json", json.dumps([manifest]).encode()),
        ]
    )
    with pytest.raises(InvalidArchive, match=message):
        load(driver, store, write(tmp_path, data))
    assert_pristine(driver, store)


def test_archive_without_manifest_or_index(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArchive, match=r"neither manifest\.json"):
        load(driver, store, write(tmp_path, make_tar([("repositories", b"{}")])))


def test_truncated_compressed_archive(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    data, _ = docker_save([L1, L3], compression=["none", "none"])
    packed = gzip.compress(data)
    with pytest.raises((InvalidArchive, InvalidLayer)):
        load(driver, store, write(tmp_path, packed[: len(packed) // 2]))
    assert_pristine(driver, store)


def test_failure_in_a_later_layer_removes_the_earlier_ones(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    bad = layer_tar([d("Files/x"), link("Files/x/l", "Files/nowhere")])
    data, _ = docker_save([L1, L2, bad])
    with pytest.raises(InvalidLayer):
        load(driver, store, write(tmp_path, data))
    assert_pristine(driver, store)


def test_failed_load_keeps_layers_of_other_images(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    good, _ = docker_save([L1])
    load(driver, store, write(tmp_path, good))
    data, _ = docker_save([L1, L2], config=config_for([L1, L3]))
    with pytest.raises(DigestMismatch):
        load(driver, store, write(tmp_path, data, "bad.tar"))
    assert [layer.id for layer in driver.layers()] == [layer_id_for(sha(L1))]
    assert len(store.images()) == 1


def test_layers_are_deduplicated_by_chain_id(
    driver: Driver, store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imported: list[str] = []
    real = driver.apply_diffs

    def spy(diffs: list[Diff], **kwargs: Any) -> list[int]:
        imported.extend(d.id for d in diffs)
        return real(diffs, **kwargs)

    monkeypatch.setattr(driver, "apply_diffs", spy)
    first, _ = docker_save([L1, L2], tags=["a:1"])
    load(driver, store, write(tmp_path, first, "a.tar"))
    assert imported == [layer_id_for(c) for c in chain_ids([sha(L1), sha(L2)])]
    imported.clear()

    # Same base, another top: only the top is imported.
    second, config = docker_save([L1, L3], tags=["b:1"])
    load(driver, store, write(tmp_path, second, "b.tar"))
    assert imported == [layer_id_for(chain_ids([sha(L1), sha(L3)])[1])]
    check_loaded(driver, store, [L1, L3], config)
    imported.clear()

    # The same diff on another parent is another chain ID: imported again.
    third, _ = docker_save([L3, L2])
    load(driver, store, write(tmp_path, third, "c.tar"))
    assert len(imported) == 2
    imported.clear()

    # Loading an archive again imports nothing and changes nothing.
    before = store.images()
    load(driver, store, write(tmp_path, first, "a.tar"))
    assert imported == []
    assert store.images() == before


def test_layer_left_in_the_driver_is_adopted(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    # As after a crash between the import and the store's commit.
    driver.apply_diff(layer_id_for(sha(L1)), None, io.BytesIO(L1))
    data, config = docker_save([L1, L2])
    load(driver, store, write(tmp_path, data))
    check_loaded(driver, store, [L1, L2], config)
    assert store.layer(sha(L1)).tar_size == len(L1)  # type: ignore[union-attr]


def test_tag_option(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    data, _ = docker_save([L1], tags=["app:1"])
    images = load(driver, store, write(tmp_path, data), tag="app:stable")
    assert images[0].tags == ("app:1", "app:stable")
    with pytest.raises(ValueError, match="invalid repository"):
        load(driver, store, write(tmp_path, data), tag="UPPER:1")


def test_load_moves_an_existing_tag(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    a, _ = docker_save([L1], tags=["app:latest"])
    b, config_b = docker_save([L3], tags=["app:latest"])
    load(driver, store, write(tmp_path, a, "a.tar"))
    load(driver, store, write(tmp_path, b, "b.tar"))
    assert store.resolve("app") == sha(config_b)[7:]


def test_windows_mini_image_fixture(driver: Driver, store: ImageStore, fixtures_dir: Path) -> None:
    """A real docker save archive, gzip-compressed, legacy layout with a layer.tar
    symlink; its trimmed layer has hard links to files that are not in it."""
    archive = fixtures_dir / "windows-mini-image.tar.gz"
    with pytest.raises(InvalidLayer) as caught:
        load(driver, store, archive)
    assert caught.value.entry.startswith(("Files/", "UtilityVM/"))
    assert "link" in str(caught.value).lower()
    assert_pristine(driver, store)


# -- save ------------------------------------------------------------------------------------


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


def test_save_then_load_round_trips(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    source, config = oci_layout([L1, L2, L3], compression=["gzip", "zstd", "none"], ref="app:1")
    load(driver, store, write(tmp_path, source))
    out = tmp_path / "saved.tar"
    save(driver, store, "app:1", out)

    saved = members(out.read_bytes())
    manifest = json.loads(saved["manifest.json"])
    assert manifest == [
        {
            "Config": f"blobs/sha256/{sha(config)[7:]}",
            "RepoTags": ["app:1"],
            "Layers": [f"blobs/sha256/{sha(layer)[7:]}" for layer in (L1, L2, L3)],
        }
    ]
    # Every blob is the original bytes: its name is its digest, the layers are the tars.
    for name, data in saved.items():
        if name.startswith("blobs/sha256/"):
            assert sha(data)[7:] == name.rsplit("/", 1)[1]
    assert saved[f"blobs/sha256/{sha(L2)[7:]}"] == L2
    index = json.loads(saved["index.json"])
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "app:1"
    assert json.loads(saved["repositories"]) == {"app": {"1": sha(config)[7:]}}

    other = Driver(tmp_path / "home2", backend=driver.backend, base_images=tmp_path / "base")
    with ImageStore(other.home) as store2:
        images = load(other, store2, out)
        assert images[0].id == sha(config)[7:]
        assert images[0].tags == ("app:1",)
        check_loaded(other, store2, [L1, L2, L3], config)
        assert store2.layers() == store.layers()


def test_saved_archive_is_an_oci_layout(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    source, config = docker_save([L1, L2], tags=["app:1"])
    load(driver, store, write(tmp_path, source))
    buf = io.BytesIO()
    save(driver, store, sha(config)[7:], buf)
    saved = members(buf.getvalue())
    assert json.loads(saved["manifest.json"])[0]["RepoTags"] == []  # saved by id: no tags
    without_manifest = make_tar([(n, b) for n, b in saved.items() if n != "manifest.json"])
    other = Driver(tmp_path / "home2", backend=driver.backend, base_images=tmp_path / "base")
    with ImageStore(other.home) as store2:
        load(other, store2, io.BytesIO(without_manifest))
        check_loaded(other, store2, [L1, L2], config)


def test_save_several_images_shares_layers(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    a, _ = docker_save([L1, L2], tags=["a:1"])
    b, _ = docker_save([L1, L3], tags=["b:1"])
    load(driver, store, write(tmp_path, a, "a.tar"))
    load(driver, store, write(tmp_path, b, "b.tar"))
    out = tmp_path / "both.tar"
    save(driver, store, ["a:1", "b:1"], out)
    names = [m for m in members(out.read_bytes()) if m.startswith("blobs/")]
    assert len(names) == len(set(names)) == 3 + 2 + 2  # layers, configs, OCI manifests
    other = Driver(tmp_path / "home2", backend=driver.backend, base_images=tmp_path / "base")
    with ImageStore(other.home) as store2:
        loaded = load(other, store2, out)
        assert sorted(t for i in loaded for t in i.tags) == ["a:1", "b:1"]


def test_save_unknown_image_writes_nothing(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    out = tmp_path / "x.tar"
    with pytest.raises(ImageNotFound):
        save(driver, store, "nothing:here", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_save_refuses_a_layer_that_changed(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    data, _ = docker_save([L1], tags=["a:1"])
    load(driver, store, write(tmp_path, data))
    # Forge the store's record of the layer: the stored tar no longer matches it.
    with store.transaction() as db:
        db.execute("UPDATE layers SET diff_id = ?", (sha(b"other"),))
    out = tmp_path / "out.tar"
    with pytest.raises(Exception, match="no longer matches its diffID"):
        save(driver, store, "a:1", out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


_LOADER = """
import sys
from winlayer import Driver
from winlayer.images import ImageStore, load
home, base, archive = sys.argv[1:4]
driver = Driver(home, backend=sys.argv[4], base_images=base)
with ImageStore(driver.home) as store:
    print(load(driver, store, archive)[0].id)
"""


def test_two_processes_load_the_same_archive(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    data, config = docker_save([L1, L2, L3], tags=["app:1"])
    path = write(tmp_path, data)
    args = [str(driver.home), str(tmp_path / "base"), str(path), driver.backend]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOADER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    assert {out.strip().decode() for out, _ in results} == {sha(config)[7:]}
    check_loaded(driver, store, [L1, L2, L3], config)
    assert len(driver.layers()) == 3
    assert len(store.images()) == 1


@pytest.mark.parametrize(
    "data", [b"", b"PK\x03\x04 a zip file" + bytes(600), gzip.compress(b"x" * 5000)]
)
def test_not_a_tar_archive(driver: Driver, store: ImageStore, tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InvalidArchive):
        load(driver, store, write(tmp_path, data))
    assert_pristine(driver, store)


def test_repo_tags_must_be_a_list(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    manifest = [{"Config": "c.json", "Layers": ["a.tar"], "RepoTags": "app:1"}]
    data = make_tar(
        [
            ("a.tar", L1),
            ("c.json", config_for([L1])),
            ("manifest.json", json.dumps(manifest).encode()),
        ]
    )
    with pytest.raises(InvalidArchive, match="RepoTags"):
        load(driver, store, write(tmp_path, data))


def test_save_refuses_a_host_base_image(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    from winlayer.images import Image

    config = b'{"id":"x","os":"windows"}'
    store.register(Image("b" * 64, config, "2024-01-01T00:00:00Z", "amd64", "windows", 0))
    with pytest.raises(WinlayerError, match="host base image"):
        save(driver, store, "b" * 64, tmp_path / "out.tar")
    assert not (tmp_path / "out.tar").exists()


def test_symlink_loop_in_the_archive(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    manifest = [{"Config": "c.json", "Layers": ["x/layer.tar"]}]
    data = make_tar(
        [
            ("x/layer.tar", ("symlink", "../y/layer.tar")),
            ("y/layer.tar", ("symlink", "../x/layer.tar")),
            ("c.json", config_for([L1])),
            ("manifest.json", json.dumps(manifest).encode()),
        ]
    )
    with pytest.raises(InvalidArchive, match="too many links"):
        load(driver, store, write(tmp_path, data))
    assert_pristine(driver, store)


# -- members named twice ---------------------------------------------------------------------

L2_OTHER = L2.replace(b"@echo hi", b"@echo HI")  # same size, other bytes
# The members of a docker save archive of [L1, L2], tagged app:1.
ARCHIVE = {
    "l1.tar": L1,
    "l2.tar": L2,
    "config.json": config_for([L1, L2]),
    "manifest.json": json.dumps(
        [{"Config": "config.json", "RepoTags": ["app:1"], "Layers": ["l1.tar", "l2.tar"]}]
    ).encode(),
}


def archive_naming_twice(member: str, first: bytes, second: bytes) -> bytes:
    """ARCHIVE with `member` in it twice: `first` in its place, `second` at the end."""
    ordered: list[tuple[str, Any]] = [
        (name, first if name == member else data) for name, data in ARCHIVE.items()
    ]
    return make_tar([*ordered, (member, second)])


def open_archive(tmp_path: Path, data: bytes, source: str) -> Any:
    if source == "file":
        return write(tmp_path, data)
    packed = gzip.compress(data)
    return write(tmp_path, packed) if source == "gzip-file" else Pipe(packed)


SOURCES = ["file", "gzip-file", "gzip-pipe"]


@pytest.fixture(params=["cached", "large"])
def member_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """ "large": layer members are too large to be held in memory while an archive is
    scanned, so their copies are compared by hashing or in staging files."""
    if request.param == "large":
        monkeypatch.setattr("winlayer._archive_members.METADATA_LIMIT", 4096)
        assert min(len(L1), len(L2)) > 4096
    return str(request.param)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("order", ["right-first", "right-last"])
@pytest.mark.parametrize(
    ("member", "wrong"),
    [
        ("l2.tar", L2_OTHER),
        ("l2.tar", L3),  # another size
        ("manifest.json", b'[{"Config": "config.json", "Layers": ["l1.tar"]}]'),
    ],
    ids=["layer-same-size", "layer-other-size", "manifest"],
)
def test_a_member_named_twice_with_different_contents_is_refused(
    driver: Driver,
    store: ImageStore,
    tmp_path: Path,
    member_size: str,
    source: str,
    order: str,
    member: str,
    wrong: bytes,
) -> None:
    right = ARCHIVE[member]
    copies = (right, wrong) if order == "right-first" else (wrong, right)
    data = archive_naming_twice(member, *copies)
    with pytest.raises(InvalidArchive) as caught:
        load(driver, store, open_archive(tmp_path, data, source))
    assert caught.value.member == member
    assert caught.value.reason == "the archive holds two different members of this name"
    assert_pristine(driver, store)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("member", ["l1.tar", "l2.tar", "manifest.json"])
def test_a_member_named_twice_with_the_same_contents_loads(
    driver: Driver, store: ImageStore, tmp_path: Path, member_size: str, source: str, member: str
) -> None:
    data = archive_naming_twice(member, ARCHIVE[member], ARCHIVE[member])
    (image,) = load(driver, store, open_archive(tmp_path, data, source))
    check_loaded(driver, store, [L1, L2], config_for([L1, L2]))
    assert image.tags == ("app:1",)


@pytest.mark.parametrize("source", SOURCES)
def test_a_link_named_twice_must_name_the_same_target(
    driver: Driver, store: ImageStore, tmp_path: Path, source: str
) -> None:
    manifest = json.dumps([{"Config": "c.json", "Layers": ["x/layer.tar"]}]).encode()
    data = make_tar(
        [
            ("a.tar", L1),
            ("b.tar", L2),
            ("x/layer.tar", ("symlink", "../a.tar")),
            ("c.json", config_for([L1])),
            ("manifest.json", manifest),
            ("x/layer.tar", ("symlink", "../b.tar")),
        ]
    )
    with pytest.raises(InvalidArchive) as caught:
        load(driver, store, open_archive(tmp_path, data, source))
    assert caught.value.member == "x/layer.tar"
    assert_pristine(driver, store)
