"""The image lifecycle commands through subprocesses: images rm/tag/inspect/history,
prune and df, their text and --json output, and rm of a layer an image uses."""

from __future__ import annotations

import json
from pathlib import Path

from winlayer.images import ImageStore

from .conftest import Cli
from .imagebuild import config_for, docker_save
from .test_image_lifecycle import L1, L2, L3, history


def _load(
    cli: Cli, tmp_path: Path, name: str, layers: list[bytes], tags: list[str], **config: object
) -> dict[str, object]:
    archive, _config = docker_save(layers, tags=tags, config=config_for(layers, **config))
    path = tmp_path / f"{name}.tar"
    path.write_bytes(archive)
    (image,) = cli.json("load", str(path))  # type: ignore[misc]
    assert isinstance(image, dict)
    return image


def test_images_rm_reports_each_image(cli: Cli, tmp_path: Path) -> None:
    base = _load(cli, tmp_path, "base", [L1], ["base:1"], history=history("base"))
    app = _load(cli, tmp_path, "app", [L1, L2], ["app:1", "app:2"], history=history("base", "app"))
    done = cli("images", "rm", "app:1", "nope:1", "base:1")
    assert done.returncode == 1
    assert done.stdout.decode().splitlines() == ["Untagged: app:1", "Untagged: base:1"]
    assert done.stderr.decode().splitlines() == ["winlayer: error: image not found: 'nope:1'"]
    refused = cli("images", "rm", str(base["id"]))
    assert refused.returncode == 1
    assert refused.stderr.decode() == (
        f"winlayer: error: conflict: unable to delete {str(base['id'])[7:19]} "
        "(cannot be forced) - image has dependent child images\n"
    )
    records = cli.json("images", "rm", "app:2")
    layers = app["layers"]
    assert isinstance(layers, list)
    assert records == [
        {"Untagged": "app:2"},
        {"Deleted": app["id"]},
        {"Deleted": base["id"]},
        {"Deleted": layers[1]},
        {"Deleted": layers[0]},
    ]
    assert cli.json("images", "ls") == []
    assert cli.json("ls") == []


def test_images_rm_force_and_no_prune(cli: Cli, tmp_path: Path) -> None:
    app = _load(cli, tmp_path, "app", [L1, L2], ["app:1", "app:2"])
    refused = cli("images", "rm", str(app["id"])[7:15])
    assert refused.returncode == 1
    assert b"(must be forced) - image is referenced by several tags: app:1, app:2" in refused.stderr
    assert len(cli.json("images", "ls")) == 1  # type: ignore[arg-type]
    forced = cli("images", "rm", "-f", "--no-prune", str(app["id"])[7:15])
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.decode().splitlines()[:3] == [
        "Untagged: app:1",
        "Untagged: app:2",
        f"Deleted: {app['id']}",
    ]


def test_rm_of_an_image_layer_is_one_line_naming_the_image(cli: Cli, tmp_path: Path) -> None:
    app = _load(cli, tmp_path, "app", [L1, L2], ["app:1"])
    layers = app["layers"]
    assert isinstance(layers, list)
    top = str(layers[1])[7:]
    done = cli("rm", top)
    assert done.returncode == 1
    assert done.stderr.decode() == f"winlayer: error: layer is used by image app:1: {top!r}\n"
    assert cli("save", "app:1", "-o", str(tmp_path / "out.tar")).returncode == 0


def test_images_tag(cli: Cli, tmp_path: Path) -> None:
    a = _load(cli, tmp_path, "a", [L1], ["a:1"])
    b = _load(cli, tmp_path, "b", [L1, L2], ["b:1"])
    assert cli.json("images", "tag", "a:1", "x") == {"id": a["id"], "tag": "x:latest"}
    assert cli("images", "tag", "b:1", "x:latest").stdout == b""
    tags = {i["id"]: i["tags"] for i in cli.json("images", "ls")}  # type: ignore[union-attr]
    assert tags == {a["id"]: ["a:1"], b["id"]: ["b:1", "x:latest"]}
    bad = cli("images", "tag", "a:1", "UPPER")
    assert bad.returncode == 1
    assert bad.stderr.decode().startswith("winlayer: error: invalid repository name 'UPPER'")


def test_images_inspect_prints_json_either_way(cli: Cli, tmp_path: Path) -> None:
    app = _load(cli, tmp_path, "app", [L1, L2], ["app:1"], **{"os.version": "10.0.1"})
    text = cli("images", "inspect", "app:1")
    assert text.returncode == 0
    shown = json.loads(text.stdout)
    assert shown == cli.json("images", "inspect", "app:1")
    (info,) = shown
    assert info["Id"] == app["id"]
    assert (info["RepoTags"], info["OsVersion"]) == (["app:1"], "10.0.1")
    assert info["RootFS"]["Type"] == "layers"
    assert info["Winlayer"]["ChainIDs"] == app["layers"]
    partial = cli("images", "inspect", "app:1", "nope")
    assert partial.returncode == 1
    assert len(json.loads(partial.stdout)) == 1
    assert partial.stderr.decode() == "winlayer: error: image not found: 'nope'\n"


def test_images_history(cli: Cli, tmp_path: Path) -> None:
    long = "cmd /c " + "x" * 60
    app = _load(cli, tmp_path, "app", [L1, L2], ["app:1"], history=history("base", long))
    rows = cli("images", "history", "app:1").stdout.decode().splitlines()
    assert rows[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert rows[1].startswith(str(app["id"])[7:19] + "  2024-05-02 10:00:00  cmd /c xxx")
    assert "\u2026" in rows[1]
    assert long not in rows[1]
    assert rows[2].startswith("<missing>")
    full = cli("images", "history", "--no-trunc", "app:1").stdout.decode()
    assert long in full
    assert str(app["id"]) in full
    entries = cli.json("images", "history", "app:1")
    assert isinstance(entries, list)
    assert [e["created_by"] for e in entries] == [long, "base"]
    assert sorted(entries[0]) == [
        "comment",
        "created",
        "created_by",
        "empty_layer",
        "image",
        "layer",
        "size",
    ]


def test_prune_and_df(cli: Cli, tmp_path: Path) -> None:
    kept = _load(cli, tmp_path, "kept", [L1, L2], ["kept:1"])
    dangling = _load(cli, tmp_path, "dangling", [L1, L3], [])
    layers = {layer["id"]: layer for layer in cli.json("ls")}  # type: ignore[union-attr]
    top = str(dangling["layers"][1])  # type: ignore[index]
    df = cli.json("df")
    assert isinstance(df, dict)
    assert sorted(df) == ["images", "layers", "sandboxes"]
    assert df["images"] == {
        "total": 2,
        "active": 0,
        "size": sum(layer["size"] for layer in layers.values()),
        "reclaimable": sum(layer["size"] for layer in layers.values()),
    }
    table = cli("df").stdout.decode().splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [row.split()[0] for row in table[1:]] == ["Images", "Layers", "Sandboxes"]
    dry = cli.json("prune", "--dry-run")
    assert dry == {
        "dry_run": True,
        "images": [{"Deleted": dangling["id"]}],
        "layers": [{"chain_id": top, "layer_id": top[7:], "size": layers[top[7:]]["size"]}],
        "size": layers[top[7:]]["size"],
    }
    text = cli("prune", "--dry-run").stdout.decode().splitlines()
    assert text[0] == f"Would delete: {dangling['id']}"
    assert text[-1].startswith("Would reclaim: ")
    done = cli.json("prune")
    assert done == {**dry, "dry_run": False}  # type: ignore[dict-item]
    assert [i["id"] for i in cli.json("images", "ls")] == [kept["id"]]  # type: ignore[union-attr]
    assert cli("prune").stdout.decode() == "Total reclaimed space: 0 B\n"
    assert cli.json("prune", "-a")["images"][0] == {"Untagged": "kept:1"}  # type: ignore[index]
    assert cli.json("ls") == []


def test_gc_removes_the_layers_an_unfinished_image_removal_left(cli: Cli, tmp_path: Path) -> None:
    app = _load(cli, tmp_path, "app", [L1, L2], ["app:1"])
    (tmp_path / "hand.tar").write_bytes(L3)
    assert cli("import", "handmade", str(tmp_path / "hand.tar")).returncode == 0
    with ImageStore(cli.home) as store, store.transaction() as db:
        store.delete_image(db, str(app["id"])[7:])  # as a process that died right after
    layers = app["layers"]
    assert isinstance(layers, list)
    swept = cli.json("gc")
    assert swept == {
        "swept": [f"removed layer {str(c)[7:]}, which no image uses" for c in reversed(layers)]
    }
    assert [layer["id"] for layer in cli.json("ls")] == ["handmade"]  # type: ignore[union-attr]
    assert cli.json("gc") == {"swept": []}
