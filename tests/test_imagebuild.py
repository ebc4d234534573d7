"""Making images: pack's times, append, commit, create --image (winlayer._imagebuild)."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from winlayer import BuildError, Driver, InvalidLayer
from winlayer.images import (
    ImageNotFound,
    ImageStore,
    append,
    chain_ids,
    commit,
    create_sandbox,
    layer_id_for,
    load,
    save,
)
from winlayer.pack import pack_directory

from . import stores
from .conftest import Cli
from .imagebuild import (
    EPOCH,
    TOOLS,
    append_tree,
    base_archive,
    docker_save,
    load_base,
    make_tree,
    sha,
)
from .layerbuild import base_layer, d, f, layer_tar
from .stores import staging_empty

driver = stores.driver
store = stores.store


# -- pack: the canonical export's times -------------------------------------------------


def test_pack_then_import_then_export_gives_the_packed_tar(driver: Driver, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    packed = tmp_path / "packed.tar"
    diff_id = pack_directory(tree, packed)
    driver.apply_diff("x", None, packed)
    with driver.diff("x") as stream:
        exported = stream.read()
    assert exported == packed.read_bytes()
    assert sha(exported) == diff_id
    # The sub-tick digits are gone: 1650000000.123456789 s is written as whole ticks.
    assert b"1650000000.1234567\n" in exported
    assert b"1650000000.123456789" not in exported
    assert b"=-1.5000001\n" in exported  # -1.50000005 s, down to a whole tick


def test_pack_clamps_times_to_source_date_epoch(tmp_path: Path) -> None:
    old = make_tree(tmp_path / "old", stamp_ns=(EPOCH - 10) * 10**9)
    new_a = make_tree(tmp_path / "a", stamp_ns=(EPOCH + 50) * 10**9 + 7)
    new_b = make_tree(tmp_path / "b", stamp_ns=(EPOCH + 999_999) * 10**9)
    a, b, o = tmp_path / "a.tar", tmp_path / "b.tar", tmp_path / "o.tar"
    # Trees made at different times after the epoch pack to the same bytes.
    assert pack_directory(new_a, a, source_date_epoch=EPOCH) == pack_directory(
        new_b, b, source_date_epoch=EPOCH
    )
    assert a.read_bytes() == b.read_bytes()
    assert f"LIBARCHIVE.creationtime={EPOCH}\n".encode() in a.read_bytes()
    # Earlier times are kept; without the epoch nothing is clamped.
    pack_directory(old, o, source_date_epoch=EPOCH)
    assert f"creationtime={EPOCH - 10}\n".encode() in o.read_bytes()
    assert pack_directory(new_a, a) != pack_directory(new_b, b)


# -- append -----------------------------------------------------------------------------


def test_append_a_folder_and_tars(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    base_config = load_base(driver, store, tmp_path)
    tree = make_tree(tmp_path / "tree")
    plain = tmp_path / "extra.tar"
    plain.write_bytes(layer_tar([d("Files/extra"), f("Files/extra/a", b"a")]))
    zipped = tmp_path / "more.tar.gz"
    more = layer_tar([d("Files/more")])
    zipped.write_bytes(gzip.compress(more))

    image = append(
        driver, store, "base:1", [tree, plain, zipped], tag="app:1", source_date_epoch=EPOCH
    )

    packed = tmp_path / "packed.tar"
    tree_id = pack_directory(tree, packed, source_date_epoch=EPOCH)
    new_ids = [tree_id, sha(plain.read_bytes()), sha(more)]
    doc = json.loads(image.config)
    base = json.loads(base_config)
    assert doc["rootfs"]["diff_ids"] == base["rootfs"]["diff_ids"] + new_ids
    assert doc["created"] == "2023-11-14T22:13:20Z" == image.created
    assert doc["history"] == [
        {"created": "2023-11-14T22:13:20Z", "created_by": f"winlayer append {name}"}
        for name in ("tree", "extra.tar", "more.tar.gz")
    ]
    for key in ("os", "os.version", "os.features", "architecture", "config", "variant"):
        assert doc[key] == base[key]
    # Sorted keys, compact: the id is the digest of exactly these bytes.
    assert image.config == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert image.id == hashlib.sha256(image.config).hexdigest()
    assert store.get("app:1").id == image.id
    chains = chain_ids(doc["rootfs"]["diff_ids"])
    assert list(image.layers) == chains
    for chain, diff_id in zip(chains, doc["rootfs"]["diff_ids"], strict=True):
        layer = store.layer(chain)
        assert layer is not None
        assert layer.layer_id == layer_id_for(chain)
        assert driver.info(layer.layer_id).diff_id == diff_id
    assert store.layer(chains[2]).tar_size == packed.stat().st_size  # type: ignore[union-attr]
    assert store.layer(chains[4]).tar_size == len(more)  # type: ignore[union-attr]
    assert image.size == sum(store.layer(c).size for c in chains)  # type: ignore[union-attr]
    assert staging_empty(driver)


def test_append_is_reproducible(
    driver: Driver, store: ImageStore, tmp_path: Path, backend_name: str
) -> None:
    load_base(driver, store, tmp_path)
    first = append_tree(
        driver,
        store,
        make_tree(tmp_path / "one" / "app", stamp_ns=(EPOCH + 100) * 10**9 + 3),
        "app:1",
    )
    layers_before = store.layers()
    again = append_tree(
        driver, store, make_tree(tmp_path / "two" / "app", stamp_ns=(EPOCH + 5) * 10**9), "app:2"
    )
    assert again.id == first.id
    assert store.layers() == layers_before  # nothing imported twice
    assert store.get("app:2").tags == ("app:1", "app:2")

    other = Driver(tmp_path / "home2", backend=backend_name, base_images=tmp_path / "base")
    with ImageStore(other.home) as store2:
        load_base(other, store2, tmp_path)
        fresh = append_tree(
            other,
            store2,
            make_tree(tmp_path / "three" / "app", stamp_ns=(EPOCH + 7777) * 10**9),
            "x:1",
        )
        assert fresh.id == first.id
        # Another epoch is another image.
        later = append_tree(other, store2, tmp_path / "three" / "app", "x:2", epoch=EPOCH + 1)
        assert later.id != first.id


def test_created_defaults_to_now_or_the_given_time(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    load_base(driver, store, tmp_path)
    tree = make_tree(tmp_path / "tree")
    when = datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=timezone.utc)
    image = append(driver, store, "base:1", [tree], tag="a:1", created=when)
    assert image.created == "2024-01-02T03:04:05.12Z"
    before = datetime.now(timezone.utc).replace(microsecond=0)
    now = append(driver, store, "base:1", [tree], tag="a:2")
    assert datetime.fromisoformat(now.created.replace("Z", "+00:00")) >= before
    with pytest.raises(ValueError, match="not both"):
        append(driver, store, "base:1", [tree], tag="a:3", created=when, source_date_epoch=1)
    with pytest.raises(ValueError, match="negative"):
        append(driver, store, "base:1", [tree], tag="a:3", source_date_epoch=-1)


def test_append_of_a_missing_path_imports_nothing(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    load_base(driver, store, tmp_path)
    before = (store.images(), store.layers(), driver.layers())
    tree = make_tree(tmp_path / "tree")
    with pytest.raises(FileNotFoundError) as info:
        append(driver, store, "base:1", [tree, tmp_path / "nope.tar"], tag="a:1")
    assert info.value.filename == str(tmp_path / "nope.tar")
    assert (store.images(), store.layers(), driver.layers()) == before
    with pytest.raises(ImageNotFound):
        append(driver, store, "missing:1", [tree], tag="a:1")
    with pytest.raises(ValueError, match="invalid repository name"):
        append(driver, store, "base:1", [tree], tag="Bad:1")
    assert (store.images(), store.layers(), driver.layers()) == before


def test_a_bad_later_input_removes_the_layers_made_before(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    load_base(driver, store, tmp_path)
    before = (store.images(), store.layers(), driver.layers())
    tree = make_tree(tmp_path / "tree")
    hostile = tmp_path / "hostile.tar"
    hostile.write_bytes(layer_tar([d("Files"), f("Files/../evil.txt", b"x")]))
    with pytest.raises(InvalidLayer, match=r"evil\.txt"):
        append(driver, store, "base:1", [tree, hostile], tag="a:1")
    assert (store.images(), store.layers(), driver.layers()) == before
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(gzip.compress(TOOLS)[:-20])
    with pytest.raises(InvalidLayer, match=r"corrupt\.tar\.gz"):
        append(driver, store, "base:1", [tree, corrupt], tag="a:1")
    assert (store.images(), store.layers(), driver.layers()) == before
    assert staging_empty(driver)


def test_a_failure_at_the_end_removes_the_new_layers(
    driver: Driver, store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_base(driver, store, tmp_path)
    create_sandbox(driver, store, "sb", "base:1")
    write_in(driver, "sb", "new.txt", b"new")
    before = (store.images(), store.layers(), driver.layers())

    def refuse(*_args: object, **_kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ImageStore, "set_tag", refuse)
    with pytest.raises(OSError, match="No space"):
        append(driver, store, "base:1", [make_tree(tmp_path / "t")], tag="a:1")
    with pytest.raises(OSError, match="No space"):
        commit(driver, store, "sb", "c:1")
    assert (store.images(), store.layers(), driver.layers()) == before
    assert staging_empty(driver)


def test_the_config_is_written_as_go_writes_a_map(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    layers = [base_layer()]
    labels = {"Labels": {"z": "<a & b>", "a": "caf\u00e9 \u2028"}}
    config = {
        "architecture": "amd64",
        "os": "windows",
        "Created": "2020-01-01T00:00:00Z",
        "config": labels,
        "RootFS": {"type": "layers", "Diff_IDs": [sha(layers[0])]},
        "History": [{"created_by": "base"}],
    }
    data, _ = docker_save(layers, tags=["odd:1"], config=json.dumps(config).encode())
    (tmp_path / "odd.tar").write_bytes(data)
    load(driver, store, tmp_path / "odd.tar")
    image = append_tree(driver, store, make_tree(tmp_path / "t"), "a:1", base="odd:1")
    assert b'"Labels":{"a":"caf\xc3\xa9 \\u2028","z":"\\u003ca \\u0026 b\\u003e"}' in image.config
    # Keys spelled otherwise are matched as Go matches them and keep their spelling.
    doc = json.loads(image.config)
    assert sorted(doc) == ["Created", "History", "RootFS", "architecture", "config", "os"]
    assert doc["Created"] == "2023-11-14T22:13:20Z"
    assert doc["RootFS"]["Diff_IDs"][0] == sha(layers[0])
    assert len(doc["RootFS"]["Diff_IDs"]) == 2
    assert [h["created_by"] for h in doc["History"]] == ["base", "winlayer append t"]
    assert doc["config"] == labels


def install_host_base(driver: Driver, store: ImageStore, tmp_path: Path) -> str:
    """A host base image, registered as images restore does; its image id."""
    folder = tmp_path / "base" / "core"
    (folder / "Files").mkdir(parents=True)
    (folder / "image.json").write_text(json.dumps({"Name": "Core", "Version": "1.0"}))
    [image_id] = driver.restore_custom_images(store, store)
    return image_id


def test_host_base_images_are_refused(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    if driver.backend != "portable":
        pytest.skip("installs a base image in the portable backend's folder")
    image_id = install_host_base(driver, store, tmp_path)
    tree = make_tree(tmp_path / "tree")
    with pytest.raises(BuildError, match="host base image"):
        append(driver, store, "core:1.0", [tree], tag="a:1")
    # A sandbox on it still works; committing it is refused the same way.
    create_sandbox(driver, store, "sb", "core:1.0")
    assert driver.info("sb").read_write
    with pytest.raises(BuildError, match="host base image"):
        commit(driver, store, "sb", "c:1")
    driver.create("unrecorded", image_id, read_write=True)  # found by its parent, refused
    with pytest.raises(BuildError, match="host base image"):
        commit(driver, store, "unrecorded", "c:1")
    assert [i.tags for i in store.images()] == [("core:1.0",)]


def test_an_appended_image_saves_and_loads_with_the_same_ids(
    driver: Driver, store: ImageStore, tmp_path: Path, backend_name: str
) -> None:
    load_base(driver, store, tmp_path)
    image = append_tree(driver, store, make_tree(tmp_path / "t"), "app:1")
    out = tmp_path / "saved.tar"
    save(driver, store, "app:1", out)
    other = Driver(tmp_path / "home2", backend=backend_name, base_images=tmp_path / "base")
    with ImageStore(other.home) as store2:
        [loaded] = load(other, store2, out)
        assert loaded.id == image.id
        assert loaded.layers == image.layers
        assert loaded.config == image.config
    # Loading it into the store that built it finds every layer there already.
    layers = store.layers()
    [again] = load(driver, store, out)
    assert again.id == image.id
    assert store.layers() == layers


# -- commit -----------------------------------------------------------------------------


def write_in(driver: Driver, sandbox: str, name: str, data: bytes) -> None:
    with driver.mounted(sandbox) as view:
        (view / name).write_bytes(data)


def test_commit_a_sandbox(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    base_config = load_base(driver, store, tmp_path)
    base = store.get("base:1")
    assert create_sandbox(driver, store, "sb", "base:1").id == base.id
    assert store.sandbox_image("sb") == base.id
    write_in(driver, "sb", "hello.txt", b"hello")
    with driver.diff("sb") as stream:
        diff = stream.read()

    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    image = commit(driver, store, "sb", "app:1", message="add hello", author="Ann", created=when)

    doc = json.loads(image.config)
    base_doc = json.loads(base_config)
    assert doc["rootfs"]["diff_ids"] == [*base_doc["rootfs"]["diff_ids"], sha(diff)]
    assert doc["history"] == [
        {
            "created": "2024-05-06T07:08:09Z",
            "created_by": "winlayer commit",
            "comment": "add hello",
            "author": "Ann",
        }
    ]
    assert doc["author"] == "Ann"
    assert doc["created"] == "2024-05-06T07:08:09Z"
    assert doc["os.version"] == "10.0.20348.2113"
    assert doc["os.features"] == ["win32k"]
    assert list(image.layers) == [*base.layers, chain_ids(doc["rootfs"]["diff_ids"])[-1]]
    top = store.layer(image.layers[-1])
    assert top is not None
    assert top.tar_size == len(diff)
    with driver.diff(top.layer_id, original=True) as stream:
        assert stream.read() == diff
    assert driver.info(top.layer_id).parent == store.layer(base.layers[-1]).layer_id  # type: ignore[union-attr]
    assert driver.info("sb").read_write  # the sandbox stays
    assert staging_empty(driver)


def test_commit_of_an_unchanged_sandbox_adds_a_layer(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    load_base(driver, store, tmp_path)
    create_sandbox(driver, store, "sb", "base:1")
    image = commit(driver, store, "sb", "same:1", source_date_epoch=EPOCH)
    assert len(image.layers) == len(store.get("base:1").layers) + 1
    assert image.created == "2023-11-14T22:13:20Z"


def test_commit_finds_the_image_of_an_unrecorded_sandbox(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    load_base(driver, store, tmp_path)
    top = store.layer(store.get("base:1").layers[-1])
    assert top is not None
    driver.create("plain", top.layer_id, read_write=True)
    image = commit(driver, store, "plain", "c:1", source_date_epoch=EPOCH)
    assert image.layers[:-1] == store.get("base:1").layers

    # Two images on the same top layer: which one is ambiguous, --from says.
    other = json.loads(store.get("base:1").config)
    other["config"] = {"Cmd": ["powershell.exe"]}
    layers = [base_layer(), TOOLS]
    data, _ = docker_save(layers, tags=["twin:1"], config=json.dumps(other).encode())
    (tmp_path / "twin.tar").write_bytes(data)
    load(driver, store, tmp_path / "twin.tar")
    with pytest.raises(BuildError, match="--from"):
        commit(driver, store, "plain", "c:2")
    twin = commit(driver, store, "plain", "c:2", from_ref="twin:1", source_date_epoch=EPOCH)
    assert json.loads(twin.config)["config"] == {"Cmd": ["powershell.exe"]}
    with pytest.raises(BuildError, match="is not on image"):
        commit(driver, store, "plain", "c:3", from_ref="c:1")


def test_commit_refuses_what_is_not_a_sandbox(
    driver: Driver, store: ImageStore, tmp_path: Path
) -> None:
    load_base(driver, store, tmp_path)
    layer_id = store.layer(store.get("base:1").layers[-1]).layer_id  # type: ignore[union-attr]
    with pytest.raises(BuildError, match="not a sandbox"):
        commit(driver, store, layer_id, "c:1")


def test_commit_ignores_a_stale_record(driver: Driver, store: ImageStore, tmp_path: Path) -> None:
    """A record left by an earlier sandbox of the same id, on another image, is not used."""
    load_base(driver, store, tmp_path)
    create_sandbox(driver, store, "sb", "base:1")
    app = append(driver, store, "base:1", [make_tree(tmp_path / "t")], tag="app:1")
    driver.remove("sb")
    driver.create("sb", store.layer(app.layers[-1]).layer_id, read_write=True)  # type: ignore[union-attr]
    image = commit(driver, store, "sb", "c:1")
    assert image.layers[:-1] == app.layers


def test_create_sandbox_of_an_unknown_image_creates_nothing(
    driver: Driver, store: ImageStore
) -> None:
    with pytest.raises(ImageNotFound):
        create_sandbox(driver, store, "sb", "nope:1")
    assert driver.layers() == []
    assert store.sandboxes() == {}


# -- the CLI ----------------------------------------------------------------------------


def cli_base(cli: Cli, tmp_path: Path) -> None:
    data, _ = base_archive()
    (tmp_path / "base.tar").write_bytes(data)
    assert cli("load", str(tmp_path / "base.tar")).returncode == 0


def test_cli_append_and_save(cli: Cli, tmp_path: Path) -> None:
    cli_base(cli, tmp_path)
    tree = make_tree(tmp_path / "app", stamp_ns=(EPOCH + 60) * 10**9)
    cli.env["SOURCE_DATE_EPOCH"] = str(EPOCH + 1)
    result = cli.json(
        "append", "base:1", str(tree), "-t", "app:1", "--source-date-epoch", str(EPOCH)
    )
    assert isinstance(result, dict)
    assert result["tag"] == "app:1"
    assert result["created"] == "2023-11-14T22:13:20Z"  # the flag wins over the variable
    assert result["id"].startswith("sha256:")
    assert len(result["id"]) == 71
    assert len(result["layers"]) == 3
    assert result["size"] > 0
    # The variable alone: a second later, another image; the same inputs, the same one.
    by_env = cli.json("append", "base:1", str(tree), "-t", "app:2")
    again = cli.json("append", "base:1", str(tree), "-t", "app:3")
    assert isinstance(by_env, dict)
    assert isinstance(again, dict)
    assert by_env["created"] == "2023-11-14T22:13:21Z"
    assert by_env["id"] == again["id"] != result["id"]
    text = cli("append", "base:1", str(tree), "-t", "app:4")
    assert text.returncode == 0
    assert text.stdout.decode().strip() == by_env["id"]
    saved = tmp_path / "out.tar"
    assert cli("save", "app:1", "-o", str(saved)).returncode == 0
    with ImageStore(tmp_path / "fresh") as store:
        fresh = Driver(tmp_path / "fresh", backend="portable", base_images=tmp_path / "base")
        [loaded] = load(fresh, store, saved)
        assert f"sha256:{loaded.id}" == result["id"]


@pytest.mark.parametrize("value", ["abc", "-5", "1.5", "", "١٢"])
def test_cli_refuses_a_bad_source_date_epoch(cli: Cli, tmp_path: Path, value: str) -> None:
    cli_base(cli, tmp_path)
    tree = make_tree(tmp_path / "app")
    flag = cli("append", "base:1", str(tree), "-t", "a:1", f"--source-date-epoch={value}")
    assert flag.returncode == 2
    assert "--source-date-epoch must be a whole number of seconds" in flag.stderr.decode()
    cli.env["SOURCE_DATE_EPOCH"] = value
    env = cli("append", "base:1", str(tree), "-t", "a:1")
    assert env.returncode == 2
    assert "SOURCE_DATE_EPOCH must be a whole number" in env.stderr.decode()
    packed = cli("pack", str(tree), "-o", str(tmp_path / "x.tar"))
    assert packed.returncode == 2
    assert not (tmp_path / "x.tar").exists()
    assert [i["tags"] for i in cli.json("images", "ls")] == [["base:1"]]  # type: ignore[union-attr]


def test_cli_append_names_a_missing_path(cli: Cli, tmp_path: Path) -> None:
    cli_base(cli, tmp_path)
    result = cli("append", "base:1", str(tmp_path / "nowhere"), "-t", "a:1")
    assert result.returncode == 1
    assert str(tmp_path / "nowhere") in result.stderr.decode()


def test_cli_create_image_and_commit(cli: Cli, tmp_path: Path) -> None:
    cli_base(cli, tmp_path)
    created = cli.json("create", "sb", "--image", "base:1")
    assert isinstance(created, dict)
    base = cli.json("images", "ls")[0]  # type: ignore[index]
    assert created["read_write"] is True
    assert created["image"] == base["id"]
    mounted = cli.json("mount", "sb")
    Path(mounted["path"]).joinpath("new.txt").write_bytes(b"new")  # type: ignore[index]
    assert cli("unmount", "sb").returncode == 0
    result = cli.json(
        "commit", "sb", "app:1", "-m", "a file", "-a", "Ann", "--source-date-epoch", str(EPOCH)
    )
    assert isinstance(result, dict)
    assert result["tag"] == "app:1"
    assert len(result["layers"]) == len(base["layers"]) + 1
    with ImageStore(tmp_path / "home") as store:
        doc = json.loads(store.get("app:1").config)
    assert doc["history"][-1] == {
        "created": "2023-11-14T22:13:20Z",
        "created_by": "winlayer commit",
        "comment": "a file",
        "author": "Ann",
    }
    both = cli("create", "sb2", "--image", "base:1", "--parent", "x")
    assert both.returncode == 2
    assert "--image and --parent" in both.stderr.decode()
    unknown = cli("commit", "sb", "c:1", "--from", "nope:1")
    assert unknown.returncode == 1
    assert "nope:1" in unknown.stderr.decode()
