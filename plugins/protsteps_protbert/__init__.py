"""Built-in protsteps plugin: ProtBert, the STEPS authors' teacher, through Hugging Face
transformers, with a trainable tail and a frozen-trunk cache.

>>> import protsteps
>>> teacher = protsteps.build("teacher", "protbert", weights="prot_bert/")  # doctest: +SKIP
>>> teacher(["MKTAYIAK", "GSHM"]).shape                                    # doctest: +SKIP
torch.Size([12, 1024])

transformers is an optional extra (``pip install -e ".[protbert]"``): without it the plugin
is listed and its settings shown, and building the teacher says what to install.
Windows, batching and the trunk cache are the core's :mod:`protsteps.teachers`, shared with
the ESM-2 teacher. :mod:`protsteps_protbert.testing` writes small random ProtBert folders
for tests and benchmarks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protsteps._lazy import lazy_names

if TYPE_CHECKING:
    from ._config import DEFAULT_MODEL, ProtBertConfig
    from ._factory import build_protbert_teacher
    from ._loading import (
        RARE_RESIDUES,
        LoadedProtBert,
        WeightsError,
        cached_snapshot,
        hf_cache_dir,
        load_folder,
        load_protbert,
        residue_vocabulary,
    )
    from ._teacher import BertTail, ProtBertTeacher

#: public name -> the module that defines it, imported on first use: the plugin's entry
#: point (``.hooks``) imports this package, and registering must not import torch
_WHERE = {
    "DEFAULT_MODEL": "._config",
    "ProtBertConfig": "._config",
    "build_protbert_teacher": "._factory",
    "RARE_RESIDUES": "._loading",
    "LoadedProtBert": "._loading",
    "WeightsError": "._loading",
    "cached_snapshot": "._loading",
    "hf_cache_dir": "._loading",
    "load_folder": "._loading",
    "load_protbert": "._loading",
    "residue_vocabulary": "._loading",
    "BertTail": "._teacher",
    "ProtBertTeacher": "._teacher",
}

__all__ = [
    "DEFAULT_MODEL",
    "RARE_RESIDUES",
    "BertTail",
    "LoadedProtBert",
    "ProtBertConfig",
    "ProtBertTeacher",
    "WeightsError",
    "build_protbert_teacher",
    "cached_snapshot",
    "hf_cache_dir",
    "load_folder",
    "load_protbert",
    "residue_vocabulary",
]


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
