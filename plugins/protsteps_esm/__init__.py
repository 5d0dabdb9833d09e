"""Built-in protsteps plugin: the ESM-2 teacher (fair-esm) with a trainable tail and a
frozen-trunk cache.

>>> import protsteps
>>> teacher = protsteps.build("teacher", "esm", weights="esm2_t6_8M_UR50D.pt")  # doctest: +SKIP
>>> teacher(["MKTAYIAK", "GSHM"]).shape                                          # doctest: +SKIP
torch.Size([12, 320])

Windows, batching and the frozen-trunk cache (:class:`TrunkCache`, :class:`TrunkKey`,
:func:`windows`) are the core's :mod:`protsteps.teachers`, shared with other teachers and
re-exported here.

:mod:`protsteps_esm.testing` writes small random ESM-2 checkpoints in fair-esm's on-disk
format for tests and benchmarks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protsteps._lazy import lazy_names

if TYPE_CHECKING:
    from protsteps.teachers import TrunkCache, TrunkKey, windows

    from ._config import ESM2_MODELS, MAX_WINDOW, ESM2Architecture, ESMConfig
    from ._factory import build_esm_teacher
    from ._loading import (
        ALLOWED_GLOBALS,
        CheckpointError,
        LoadedESM2,
        hub_checkpoint_path,
        load_esm2,
        read_checkpoint,
        trunk_fingerprint,
    )
    from ._teacher import ESMTeacher, TeacherTail, normalize_sequence

#: public name -> the module that defines it, imported on first use: the plugin's entry
#: point (``.hooks``) imports this package, and registering must not import torch
_WHERE = {
    "TrunkCache": "protsteps.teachers",
    "TrunkKey": "protsteps.teachers",
    "windows": "protsteps.teachers",
    "ESM2_MODELS": "._config",
    "MAX_WINDOW": "._config",
    "ESM2Architecture": "._config",
    "ESMConfig": "._config",
    "build_esm_teacher": "._factory",
    "ALLOWED_GLOBALS": "._loading",
    "CheckpointError": "._loading",
    "LoadedESM2": "._loading",
    "hub_checkpoint_path": "._loading",
    "load_esm2": "._loading",
    "read_checkpoint": "._loading",
    "trunk_fingerprint": "._loading",
    "ESMTeacher": "._teacher",
    "TeacherTail": "._teacher",
    "normalize_sequence": "._teacher",
}

__all__ = [
    "ALLOWED_GLOBALS",
    "ESM2_MODELS",
    "MAX_WINDOW",
    "CheckpointError",
    "ESM2Architecture",
    "ESMConfig",
    "ESMTeacher",
    "LoadedESM2",
    "TeacherTail",
    "TrunkCache",
    "TrunkKey",
    "build_esm_teacher",
    "hub_checkpoint_path",
    "load_esm2",
    "normalize_sequence",
    "read_checkpoint",
    "trunk_fingerprint",
    "windows",
]


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
