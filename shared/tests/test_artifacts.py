"""The artifact store on file:// URLs: bundles round-trip, damage is detected, no pickles."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from recsys_shared.artifacts import (
    IDS_FILE,
    MANIFEST,
    MODEL_FILE,
    ArtifactError,
    ArtifactStore,
    load_npz,
    model_folder,
    npz_bytes,
    sha256,
)
from recsys_shared.errors import RecsysError

FOLDER = model_folder(1)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def store(base: Path) -> ArtifactStore:
    return ArtifactStore(f"file://{base}/")


@pytest.fixture
def bundle_files() -> dict[str, bytes]:
    return {
        MODEL_FILE: npz_bytes(
            item_factors=np.arange(12, dtype=np.float32).reshape(4, 3),
            user_factors=np.ones((2, 3), dtype=np.float32),
        ),
        IDS_FILE: npz_bytes(items=np.array(["a", "b:c", "d", "é"]), users=np.array(["u1", "u2"])),
    }


def test_bundle_round_trips(store: ArtifactStore, bundle_files: dict[str, bytes]) -> None:
    written = store.write_bundle(FOLDER, bundle_files, {"version": 1, "algorithm": "als"})

    manifest, files = store.read_bundle(FOLDER)

    assert manifest == written
    assert manifest["version"] == 1
    assert files == bundle_files
    for name, data in bundle_files.items():
        assert manifest["files"][name] == {"sha256": sha256(data), "bytes": len(data)}
    arrays = load_npz(files[MODEL_FILE])
    np.testing.assert_array_equal(
        arrays["item_factors"], np.arange(12, dtype=np.float32).reshape(4, 3)
    )
    assert list(load_npz(files[IDS_FILE])["items"]) == ["a", "b:c", "d", "é"]


def test_writes_leave_no_partial_files(
    store: ArtifactStore, base: Path, bundle_files: dict[str, bytes]
) -> None:
    store.write_bundle(FOLDER, bundle_files, {})

    on_disk = sorted(path.name for path in (base / FOLDER).iterdir())

    assert on_disk == sorted([*bundle_files, MANIFEST])


def _flip_a_byte(path: Path) -> None:
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


@pytest.mark.parametrize(
    ("damage", "name", "message"),
    [
        (_flip_a_byte, MODEL_FILE, "checksum"),
        (_truncate, IDS_FILE, "checksum"),
        (Path.unlink, IDS_FILE, "does not exist"),
    ],
    ids=["corrupted", "truncated", "missing"],
)
def test_a_damaged_file_is_detected(
    store: ArtifactStore,
    base: Path,
    bundle_files: dict[str, bytes],
    damage: Callable[[Path], None],
    name: str,
    message: str,
) -> None:
    store.write_bundle(FOLDER, bundle_files, {})
    damage(base / FOLDER / name)

    with pytest.raises(ArtifactError, match=message):
        store.read_bundle(FOLDER)


def test_a_bundle_without_manifest_is_an_artifact_error(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactError):
        store.read_bundle(model_folder(404))
    with pytest.raises(RecsysError):
        store.read_bytes("nowhere/at/all.npz")


def test_load_npz_refuses_pickled_objects() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=True, payload=np.array([{"evil": True}, None], dtype=object))

    with pytest.raises(ValueError, match="pickle"):
        load_npz(buffer.getvalue())


def test_load_npz_reads_plain_arrays() -> None:
    arrays = load_npz(npz_bytes(x=np.array([1, 2, 3]), y=np.zeros((2, 2))))

    assert set(arrays) == {"x", "y"}
    np.testing.assert_array_equal(arrays["x"], [1, 2, 3])


def test_url_exists_list_and_delete(store: ArtifactStore, base: Path) -> None:
    store.write_bytes("models/v00000002/a.json", b"{}")
    store.write_bytes("models/v00000010/a.json", b"{}")

    assert store.url("models/v00000002/a.json") == f"file://{base}/models/v00000002/a.json"
    assert store.exists("models/v00000002/a.json")
    assert store.list_dirs("models") == ["v00000002", "v00000010"]
    assert store.list_dirs("snapshots") == []

    store.delete_tree("models/v00000002")
    store.delete_tree("models/v99999999")

    assert not store.exists("models/v00000002/a.json")
    assert store.list_dirs("models") == ["v00000010"]


def test_overwriting_a_file_replaces_it(store: ArtifactStore) -> None:
    store.write_bytes("x.json", b"first")
    store.write_bytes("x.json", b"second")

    assert store.read_bytes("x.json") == b"second"


def test_model_folders_sort_in_version_order() -> None:
    versions = [1, 2, 9, 10, 11, 100, 12345]

    folders = [model_folder(version) for version in versions]

    assert sorted(folders) == folders
    assert model_folder(7) == "models/v00000007"


def test_a_broken_manifest_is_an_artifact_error(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path}")
    store.write_bundle("b", {"a.npz": b"data"}, {"version": 1})
    store.write_bytes("b/manifest.json", b"{not json")
    with pytest.raises(ArtifactError, match="broken manifest"):
        store.read_bundle("b")
