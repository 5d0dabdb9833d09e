"""Downstream use of a pretrained encoder: labelled data, fine-tuning, embeddings.

>>> from protsteps.downstream import read_manifest, finetune, FinetuneConfig, embed
>>> data = read_manifest("labels.tsv", label_column="ec_class")              # doctest: +SKIP
>>> result = finetune(data, "runs/pre", "runs/ec-probe",
...                   FinetuneConfig(mode="probe", epochs=20, seed=1))      # doctest: +SKIP
>>> result.test["macro_f1"]                                                # doctest: +SKIP
>>> embed(["structures/"], "runs/pre").save("embeddings.npz")              # doctest: +SKIP

Label formats: a manifest (:func:`read_manifest`), IEConv's ProtFunct (:func:`protfunct`)
and DeepLoc with AlphaFold DB files (:func:`deeploc`); all give a :class:`LabelledSet`.
They are registered label formats, as a plugin's are; :func:`read_labels` reads a file in
any registered format by name.
See ``docs/downstream.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:  # the names, for type checkers
    from ._adapters import StructureIndex, deeploc, protfunct, read_labels
    from ._config import FinetuneConfig
    from ._embed import Embeddings, embed, load_embeddings
    from ._finetune import FinetuneResult, finetune
    from ._labels import (
        SPLITS,
        LabelledChain,
        LabelledSet,
        ManifestError,
        Skipped,
        read_manifest,
        stratified_split,
    )
    from ._metrics import accuracy, average_precision, confusion_matrix, fmax, macro_f1
    from ._model import Backbone, ClassificationHead, load_backbone, scratch_backbone

# Loaded on first use (``protsteps finetune --help`` reads FinetuneConfig without torch):
# each public name and the module that defines it.
_LAZY = {
    "StructureIndex": "._adapters",
    "deeploc": "._adapters",
    "protfunct": "._adapters",
    "read_labels": "._adapters",
    "Embeddings": "._embed",
    "embed": "._embed",
    "load_embeddings": "._embed",
    "FinetuneConfig": "._config",
    "FinetuneResult": "._finetune",
    "finetune": "._finetune",
    "SPLITS": "._labels",
    "LabelledChain": "._labels",
    "LabelledSet": "._labels",
    "ManifestError": "._labels",
    "Skipped": "._labels",
    "read_manifest": "._labels",
    "stratified_split": "._labels",
    "accuracy": "._metrics",
    "average_precision": "._metrics",
    "confusion_matrix": "._metrics",
    "fmax": "._metrics",
    "macro_f1": "._metrics",
    "Backbone": "._model",
    "ClassificationHead": "._model",
    "load_backbone": "._model",
    "scratch_backbone": "._model",
}

__all__ = [
    "SPLITS",
    "Backbone",
    "ClassificationHead",
    "Embeddings",
    "FinetuneConfig",
    "FinetuneResult",
    "LabelledChain",
    "LabelledSet",
    "ManifestError",
    "Skipped",
    "StructureIndex",
    "accuracy",
    "average_precision",
    "confusion_matrix",
    "deeploc",
    "embed",
    "finetune",
    "fmax",
    "load_backbone",
    "load_embeddings",
    "macro_f1",
    "protfunct",
    "read_labels",
    "read_manifest",
    "scratch_backbone",
    "stratified_split",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
