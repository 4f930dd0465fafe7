"""An artifact store addressed by URL: ``file://`` by default, ``s3://`` (or any fsspec URL).

Artifacts are written whole and published by a manifest written last, so a reader that finds the
manifest finds complete files, and verifies each against the checksum the manifest records.
Only numpy ``.npz`` files and JSON are stored: nothing is pickled across a process boundary.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import numpy.typing as npt
from fsspec.implementations.local import LocalFileSystem

from recsys_shared.errors import RecsysError

MANIFEST = "manifest.json"
#: A model version's folder holds the model as implicit's ``save()`` wrote it, and its id tables.
MODEL_FILE = "model.npz"
IDS_FILE = "ids.npz"


def model_folder(version: int) -> str:
    return f"models/v{version:08d}"


#: A training snapshot's folder (written by the feature-store, read by the worker) and its file.
SNAPSHOTS_FOLDER = "snapshots"
SNAPSHOT_FILE = "interactions.npz"


def snapshot_folder(snapshot_id: str) -> str:
    return f"{SNAPSHOTS_FOLDER}/{snapshot_id}"


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
