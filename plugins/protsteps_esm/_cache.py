"""The frozen-trunk cache: hidden states entering the trainable tail, per sequence.

In the pseudo bi-level scheme only the teacher's last layer(s) change, so everything below
them gives the same result at every step. The teacher stores, per sequence, the hidden
states that enter its tail (``[len + 2, embed_dim]``, BOS and EOS included) and recomputes
only the tail afterwards.

A key is ``(model, trunk fingerprint, trunk layers, sequence)``: the fingerprint hashes the
weights the states depend on (see :func:`~protsteps_esm.trunk_fingerprint`), so states of
other weights, or of a trunk cut at another layer, are never mixed up, on disk either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor

from protsteps.files import atomic_torch_save

__all__ = ["TrunkKey", "TrunkCache"]


@dataclasses.dataclass(frozen=True)
class TrunkKey:
    """What the cached hidden states of one sequence depend on.

    model: the model's name (hub name or weights file stem), for the disk layout.
    fingerprint: SHA-256 of the trunk's weights and architecture (hex).
    layer: how many transformer layers the trunk has (the states are their output; 0 is the
        scaled token embedding).
    sequence: the residues as the model sees them (one window of a long chain).
    """

    model: str
    fingerprint: str
    layer: int
    sequence: str

    def relative_path(self) -> Path:
        digest = hashlib.sha256(self.sequence.encode()).hexdigest()
        safe_model = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.model)
        return Path(safe_model) / self.fingerprint[:16] / f"trunk{self.layer}" / digest[:2] / f"{digest}.pt"


class TrunkCache:
    """A bounded in-memory LRU cache of trunk states, optionally backed by a folder.

    Parameters
    ----------
    max_bytes:
        Memory budget; least recently used entries are dropped beyond it. 0 keeps nothing in
        memory (the disk cache, if any, still works).
    directory:
        Folder of the persistent cache, or ``None``. Files are written atomically and read
        with ``weights_only=True``; an unreadable or mismatched file counts as a miss and is
        rewritten.

    Entries are ``[T, embed_dim]`` tensors kept on the CPU, detached.
    """

    def __init__(self, max_bytes: int, directory: str | os.PathLike[str] | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.directory = Path(directory) if directory is not None else None
        self._entries: OrderedDict[TrunkKey, Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held in memory."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        self._entries.clear()
        self._bytes = 0

    def get(self, key: TrunkKey) -> Tensor | None:
        """The states for ``key`` from memory, else from disk, else ``None``."""
        states = self._entries.get(key)
        if states is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return states
        states = self._read(key)
        if states is not None:
            self.disk_hits += 1
            self._remember(key, states)
            return states
        self.misses += 1
        return None

    def put(self, key: TrunkKey, states: Tensor) -> None:
        """Store ``states`` (``[T, embed_dim]``) in memory and, with a folder, on disk."""
        # a copy: a slice of a padded batch would otherwise keep (and save) the whole batch;
        # made outside inference mode so that later training steps may read it
        with torch.inference_mode(False):
            states = states.detach().to("cpu", copy=True).contiguous()
        self._remember(key, states)
        if self.directory is not None:
            path = self.directory / key.relative_path()
            atomic_torch_save({"sequence": key.sequence, "states": states}, path)

    def _remember(self, key: TrunkKey, states: Tensor) -> None:
        size = states.numel() * states.element_size()
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.numel() * old.element_size()
        self._entries[key] = states
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.numel() * dropped.element_size()

    def _read(self, key: TrunkKey) -> Tensor | None:
        if self.directory is None:
            return None
        path = self.directory / key.relative_path()
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            # a damaged file (e.g. a disk that filled up) is only a miss: it is recomputed
            return None
        if (
            not isinstance(data, dict)
            or data.get("sequence") != key.sequence
            or not isinstance(data.get("states"), Tensor)
            or data["states"].dim() != 2
            or data["states"].shape[0] != len(key.sequence) + 2
        ):
            return None
        return data["states"]
