"""An artifact store addressed by URL: ``file://`` by default, ``s3://`` (or any fsspec URL).

Artifacts are written whole and published by a manifest written last, so a reader that finds the
manifest finds complete files, and verifies each against the checksum the manifest records.
Only numpy ``.npz`` files and JSON are stored: nothing is pickled across a process boundary.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import numpy.typing as npt
from fsspec.implementations.local import LocalFileSystem
from scipy.sparse import csr_matrix

from recsys_shared.errors import RecsysError

MANIFEST = "manifest.json"
#: A model version's folder holds the model and its id tables. For a factor recipe (ALS, BPR)
#: the model is as implicit's ``save()`` wrote it; for an item-item recipe (item-kNN, EASE,
#: hybrid) it holds the arrays of :class:`ItemItemArrays`. The id tables also hold
#: ``item_counts``: how many training users touched each item (0: a cold, catalogue-only item).
MODEL_FILE = "model.npz"
IDS_FILE = "ids.npz"
#: Optional: the content model's neighbours (a CSR matrix over the model's items, read with
#: :func:`sparse_from`), present when the snapshot carried item metadata.
CONTENT_FILE = "content.npz"
#: Optional, ALS with BM25/TF-IDF confidence: ``item_idf`` and ``average_length``, so that
#: fresh events are folded in with the weighting the model was trained with.
CONFIDENCE_FILE = "confidence.npz"


#: Where every model version's folder is (``model_folder``).
MODELS_FOLDER = "models"


def model_folder(version: int) -> str:
    return f"{MODELS_FOLDER}/v{version:08d}"


#: A training snapshot's folder (written by the feature-store, read by the worker) and its file.
SNAPSHOTS_FOLDER = "snapshots"
SNAPSHOT_FILE = "interactions.npz"
#: Optional in a snapshot: the catalogue's item metadata, for content models. Arrays:
#: ``item_ids``, ``titles``, ``category_offsets`` (n + 1) and ``categories`` (item i's
#: categories are ``categories[category_offsets[i]:category_offsets[i + 1]]``).
CATALOGUE_FILE = "catalogue.npz"


def snapshot_folder(snapshot_id: str) -> str:
    return f"{SNAPSHOTS_FOLDER}/{snapshot_id}"


#: ``<ms>-<crc>.g<generation>`` (``feature_store.snapshots.snapshot_id``); older ids lack ``.g``.
_SNAPSHOT_NAME = re.compile(r"([0-9]+)-([0-9]+)(?:\.g([0-9]+))?")


def snapshot_order(name: str) -> tuple[int, int, int] | None:
    """Where a snapshot sorts, oldest first: by stream position, then data generation (it
    only goes up), then checksum (which says nothing of age: it only breaks ties). Every part
    a number, so ``g10`` is newer than ``g9``. None for a name the feature-store never makes."""
    match = _SNAPSHOT_NAME.fullmatch(name)
    if match is None:
        return None
    position, checksum, generation = match.groups()
    return int(position), int(generation or 0), int(checksum)


class ArtifactError(RecsysError):
    """An artifact is missing, incomplete or does not match its checksum."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.base_url)
        self.root: str = root
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}"

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a file so that readers never see it half-written."""
        full = self._full(path)
        if self.is_local:
            Path(full).parent.mkdir(parents=True, exist_ok=True)
            temporary = f"{full}.{uuid.uuid4().hex}.partial"
            with open(temporary, "wb") as handle:  # noqa: PTH123 - fsspec paths are strings
                handle.write(data)
                handle.flush()
            Path(temporary).replace(full)
        else:
            # Object stores make a PUT visible all at once.
            self.fs.pipe_file(full, data)

    def read_bytes(self, path: str) -> bytes:
        try:
            data: bytes = self.fs.cat_file(self._full(path))
        except FileNotFoundError as error:
            raise ArtifactError(f"Artifact '{self.url(path)}' does not exist.") from error
        return data

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._full(path)))

    def delete_tree(self, path: str) -> None:
        full = self._full(path)
        if self.fs.exists(full):
            self.fs.rm(full, recursive=True)

    def list_dirs(self, path: str) -> list[str]:
        full = self._full(path)
        if not self.fs.exists(full):
            return []
        return sorted(
            Path(entry).name for entry in self.fs.ls(full, detail=False) if self.fs.isdir(entry)
        )

    # ── bundles: a folder of npz files published by a manifest ───────────────────────────
    def write_bundle(
        self, folder: str, files: dict[str, bytes], metadata: dict[str, Any]
    ) -> dict[str, Any]:
        """Write every file, then the manifest that names them with their checksums."""
        for name, data in files.items():
            self.write_bytes(f"{folder}/{name}", data)
        manifest = {
            **metadata,
            "files": {
                name: {"sha256": sha256(data), "bytes": len(data)} for name, data in files.items()
            },
        }
        self.write_bytes(f"{folder}/{MANIFEST}", json.dumps(manifest, indent=2).encode())
        return manifest

    def bundle_bytes(self, folder: str) -> int:
        """The size of a bundle's files, from its manifest (nothing else is read)."""
        try:
            manifest = json.loads(self.read_bytes(f"{folder}/{MANIFEST}"))
            return sum(int(entry["bytes"]) for entry in manifest["files"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ArtifactError(f"Artifact '{self.url(folder)}' has a broken manifest.") from error

    def read_bundle(self, folder: str) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The manifest and every file it names, each verified against its checksum."""
        try:
            manifest = json.loads(self.read_bytes(f"{folder}/{MANIFEST}"))
            listed = dict(manifest["files"])
        except (ValueError, KeyError, TypeError) as error:
            raise ArtifactError(f"Artifact '{self.url(folder)}' has a broken manifest.") from error
        files: dict[str, bytes] = {}
        for name, expected in listed.items():
            data = self.read_bytes(f"{folder}/{name}")
            if sha256(data) != expected["sha256"]:
                raise ArtifactError(
                    f"Artifact '{self.url(folder + '/' + name)}' does not match its checksum."
                )
            files[name] = data
        return manifest, files


def npz_bytes(**arrays: npt.ArrayLike) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def load_npz(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """Arrays from npz bytes; refuses pickled objects."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def sparse_arrays(prefix: str, matrix: csr_matrix) -> dict[str, npt.NDArray[Any]]:
    """A CSR matrix as named arrays for an npz (no pickles: scipy's own format pickles none
    either, but it is one file per matrix)."""
    return {
        f"{prefix}_data": matrix.data.astype(np.float32),
        f"{prefix}_indices": matrix.indices.astype(np.int32),
        f"{prefix}_indptr": matrix.indptr.astype(np.int64),
        f"{prefix}_shape": np.asarray(matrix.shape, dtype=np.int64),
    }


def sparse_from(prefix: str, arrays: dict[str, npt.NDArray[Any]]) -> csr_matrix:
    shape = tuple(int(size) for size in arrays[f"{prefix}_shape"])
    return csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=shape,
    )


@dataclass(frozen=True)
class ItemItemArrays:
    """An item-item model: a user's scores are their weighted history times this matrix.

    The matrix is ``block`` (dense, over the items ``columns``: EASE on the most popular
    items) plus ``sparse`` (over every item: item-kNN neighbours, or the hybrid's weighted
    content neighbours). Either part may be empty.
    """

    columns: npt.NDArray[np.int64]
    block: npt.NDArray[np.float32]
    sparse: csr_matrix

    def to_npz(self) -> bytes:
        return npz_bytes(
            columns=self.columns, block=self.block, **sparse_arrays("sparse", self.sparse)
        )

    @classmethod
    def from_npz(cls, data: bytes) -> ItemItemArrays:
        arrays = load_npz(data)
        try:
            columns = arrays["columns"].astype(np.int64)
            block = arrays["block"].astype(np.float32)
            sparse = sparse_from("sparse", arrays)
        except (KeyError, ValueError) as error:
            raise ArtifactError(f"Not an item-item model: {error}") from error
        if block.shape != (len(columns), len(columns)) or sparse.shape[0] != sparse.shape[1]:
            raise ArtifactError("Item-item model: block or sparse matrix of the wrong shape.")
        return cls(columns=columns, block=block, sparse=sparse)
