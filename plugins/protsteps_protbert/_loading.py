"""Finding ProtBert's weights and loading them with Hugging Face transformers.

Where the weights come from, in order:

1. ``weights``: a local folder in the layout ``hf download`` and
   ``save_pretrained`` write (``config.json``, ``model.safetensors`` or ``pytorch_model.bin``,
   ``vocab.txt`` or ``tokenizer.json``);
2. the Hugging Face cache (``huggingface_hub.constants.HF_HUB_CACHE``, by default
   ``~/.cache/huggingface/hub``; ``HF_HOME`` or ``HF_HUB_CACHE`` move it), where
   ``from_pretrained`` itself puts downloads, so a model fetched earlier is found;
3. the Hugging Face Hub, after a connectivity probe of a few seconds, into that cache
   (unless ``download`` is false or ``HF_HUB_OFFLINE`` is set).

Every load from a folder passes ``local_files_only=True``: nothing but step 3 touches the
network. ``transformers`` is imported here, lazily, so that the plugin (its settings, its
entry in ``protsteps plugins``) works without it and building the teacher says what to
install.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from protsteps.errors import ComponentUnavailableError, ProtstepsError
from protsteps.teachers import ResidueVocabulary, probe

__all__ = [
    "RARE_RESIDUES",
    "WEIGHT_FILES",
    "LoadedProtBert",
    "WeightsError",
    "hf_cache_dir",
    "cached_snapshot",
    "load_protbert",
    "load_folder",
    "residue_vocabulary",
]

#: files of which a model folder must hold one (single file or sharded index)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

#: ProtBert has tokens for these, but the STEPS authors (and ProtBert's model card) read
#: them as X: selenocysteine, pyrrolysine and the ambiguity codes Z (E/Q) and B (D/N)
RARE_RESIDUES = frozenset("UZOB")

_STANDARD = frozenset("ACDEFGHIKLMNPQRSTVWY")

_WAYS_OUT = (
    "use --set teacher.weights=DIR to load a local ProtBert folder (hf download "
    "Rostlab/prot_bert --local-dir DIR), or --teacher none to train without a teacher"
)


class WeightsError(ProtstepsError):
    """A weights folder exists but cannot be used (files missing, not a BERT model, a
    tokenizer that does not spell residues as ProtBert does); the message names the folder
    and the reason."""


@dataclasses.dataclass
class LoadedProtBert:
    """A transformers ``BertModel`` (no pooler, float32, eval mode) and how its tokenizer
    spells residues.

    ``name`` is the repo id for cached and downloaded weights and the folder's name for a
    local folder; ``source`` says where the weights came from.
    """

    model: Any
    vocabulary: ResidueVocabulary
    name: str
    path: Path
    source: Literal["folder", "hf cache", "download"]


def _transformers() -> ModuleType:
    try:
        import transformers
    except ImportError:
        raise ComponentUnavailableError(
            "the ProtBert teacher is unavailable: the transformers package is not installed; "
            'install it with pip install -e ".[protbert]", or use --teacher none to train without a teacher'
        ) from None
    return transformers


@contextlib.contextmanager
def _quiet(transformers: ModuleType) -> Iterator[None]:
    """No loading progress bars or load reports: a run summary says what was loaded. (The
    MLM head that ProtBert's file also holds is expected to be left out; missing tensors are
    checked, and refused, in :func:`load_folder`.)"""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, as ``huggingface_hub`` resolves it now."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str) -> Path | None:
    """The folder of ``repo_id``'s cached snapshot (revision ``main``) when it holds a
    config and weights, else ``None``. Reads the cache only."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", cache_dir=hf_cache_dir())
    except ValueError:  # not a valid repo id (huggingface_hub's HFValidationError)
        return None
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    return folder if any((folder / name).is_file() for name in WEIGHT_FILES) else None


def _download(repo_id: str) -> tuple[Path | None, str | None]:
    """Fetch ``repo_id``'s config, tokenizer files and one weights format into the cache;
    the snapshot folder, or a reason on failure."""
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        return None, "downloading is off (HF_HUB_OFFLINE is set)"
    reason = probe(constants.ENDPOINT)
    if reason is not None:
        return None, f"the Hugging Face Hub cannot be reached: {reason}"
    try:
        # safetensors when the repo has them; otherwise the pickled weights (ProtBert's
        # original upload), read by transformers with weights_only=True
        folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "*.safetensors"]))
        if not any((folder / name).is_file() for name in WEIGHT_FILES):
            folder = Path(snapshot_download(repo_id, allow_patterns=["pytorch_model.bin*"]))
    except Exception as exc:  # HTTP, repository-not-found, disk: all mean "not available"
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        return None, f"downloading {repo_id} from {constants.ENDPOINT} failed ({detail})"
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        return None, f"{repo_id} on {constants.ENDPOINT} has no weights file ({', '.join(WEIGHT_FILES)})"
    return folder, None


def load_protbert(model: str, weights: str | Path | None = None, download: bool = True) -> LoadedProtBert:
    """Find, check and load a ProtBert model.

    Parameters
    ----------
    model:
        A Hugging Face repo id (``Rostlab/prot_bert``); used when ``weights`` is None.
    weights:
        A local folder as ``save_pretrained`` or ``hf download`` writes it.
    download:
        Whether to fetch a model missing from the cache from the Hub (after a short probe).

    Raises
    ------
    ComponentUnavailableError
        Within seconds when transformers is not installed, or the weights are neither at
        ``weights``, nor cached, nor downloadable; one line with the two ways out.
    WeightsError
        When a folder is found but cannot be used.
    """
    transformers = _transformers()
    if weights is not None:
        folder = Path(weights).expanduser()
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise ComponentUnavailableError(
                f"ProtBert weights folder {folder} {what} (teacher.weights); point it at a folder with "
                "config.json, the model weights and vocab.txt (as hf download or "
                "save_pretrained writes it), or use --teacher none to train without a teacher"
            )
        bert, vocabulary = load_folder(folder, transformers)
        return LoadedProtBert(bert, vocabulary, folder.name, folder, "folder")

    source: Literal["hf cache", "download"] = "hf cache"
    snapshot = cached_snapshot(model)
    if snapshot is None:
        reason = "downloading is off (teacher.download = false)"
        if download:
            snapshot, reason = _download(model)  # type: ignore[assignment]
        if snapshot is None:
            raise ComponentUnavailableError(
                f"ProtBert model '{model}' is unavailable: not in the Hugging Face cache at "
                f"{hf_cache_dir()} and {reason}; {_WAYS_OUT}"
            )
        source = "download"
    bert, vocabulary = load_folder(snapshot, transformers)
    return LoadedProtBert(bert, vocabulary, model, snapshot, source)


def load_folder(folder: Path, transformers: ModuleType | None = None) -> tuple[Any, ResidueVocabulary]:
    """Load ``BertModel`` (without the pooler, float32, eval mode) and the tokenizer from a
    local folder, never touching the network.

    Every tensor of the model must be in the file: a missing one is an error here, not a
    random initialisation and a log line. Tensors of heads the folder also holds (ProtBert's
    masked-language-model head) are left out.
    """
    transformers = transformers or _transformers()
    missing = [name for name in ("config.json",) if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[::2]))
    if missing:
        raise WeightsError(f"{folder}: not a ProtBert folder: no {' and no '.join(missing)}")
    try:
        with _quiet(transformers):
            config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
            if config.model_type != "bert":
                raise WeightsError(
                    f"{folder}: config.json describes a '{config.model_type}' model, not a BERT model like ProtBert"
                )
            model, info = transformers.BertModel.from_pretrained(
                folder,
                config=config,
                add_pooling_layer=False,
                output_loading_info=True,
                local_files_only=True,
            )
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                folder, local_files_only=True, do_lower_case=False
            )
    except WeightsError:
        raise
    except Exception as exc:  # transformers reports unreadable folders in many ways
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise WeightsError(f"{folder}: transformers cannot load a BERT model from it: {detail}") from None
    absent = sorted(info.get("missing_keys") or ())
    if absent:
        shown = ", ".join(absent[:4]) + (f" and {len(absent) - 4} more" if len(absent) > 4 else "")
        raise WeightsError(f"{folder}: the weights lack tensors of the BERT model: {shown}")
    return model.float().eval(), residue_vocabulary(tokenizer, folder)


def residue_vocabulary(tokenizer: Any, folder: Path) -> ResidueVocabulary:
    """How ``tokenizer`` spells residues: one token per upper-case one-letter code, ``X``
    for anything else (U, Z, O and B included, as the STEPS authors did), [CLS] and [SEP]
    around, [PAD] after.

    The tokenizer itself is asked to tokenise every residue once: a tokenizer that would
    spell them otherwise (lower-casing, word pieces) is refused rather than silently
    disagreeing with the model's training.
    """
    vocab = tokenizer.get_vocab()
    residues = {t: i for t, i in vocab.items() if len(t) == 1 and t.isalpha() and t.isupper()}
    residues = {t: i for t, i in residues.items() if t not in RARE_RESIDUES}
    lacking = sorted((_STANDARD | {"X"}) - set(residues))
    if lacking:
        raise WeightsError(f"{folder}: the tokenizer has no token for residues {', '.join(lacking)}")
    special = {
        "[CLS]": tokenizer.cls_token_id,
        "[SEP]": tokenizer.sep_token_id,
        "[PAD]": tokenizer.pad_token_id,
    }
    unset = [name for name, value in special.items() if value is None]
    if unset:
        raise WeightsError(f"{folder}: the tokenizer has no {', '.join(unset)} token")
    vocabulary = ResidueVocabulary(
        residues, start=special["[CLS]"], end=special["[SEP]"], padding=special["[PAD]"]
    )
    letters = sorted(residues)
    # ProtBert's input is the residues separated by spaces (its model card, the authors' code)
    spelled = list(tokenizer(" ".join(letters))["input_ids"])
    expected = vocabulary.tokens(["".join(letters)])[0].tolist()
    if spelled != expected:
        raise WeightsError(
            f"{folder}: the tokenizer does not spell residues one token each between [CLS] and "
            f"[SEP] (it gives {spelled} for {' '.join(letters)})"
        )
    return vocabulary
