"""What every trunk-and-tail teacher shares: windows, batching, the frozen-trunk cache and
evaluation with replacement tail weights.

A protein language model used as a STEPS teacher is split in two:

    tokens -> embedding -> layers 1 .. ℓ-k      frozen trunk (cacheable)
           -> layers ℓ-k+1 .. ℓ                 trainable tail

The trunk's weights never change, so its output (the hidden states entering the tail) is
computed once per sequence and kept in a :class:`TrunkCache`; a training step then runs only
the tail. :class:`TrunkTailTeacher` holds everything about this that does not depend on the
model: windows over chains longer than the model accepts, length-bucketed batching under a
token budget, the cache, reuse of the last trunk output when there is no cache, the tail
evaluated with other weights through :func:`torch.func.functional_call` (the pseudo
bi-level inner step), and the module plumbing that keeps the trunk frozen and out of the
state dict. A model plugs in by implementing five small methods (see the class).

The ``esm`` (ESM-2) and ``protbert`` (ProtBert) teachers are built on it; a plugin for
another model subclasses it the same way.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import os
import socket
import threading
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .components import Teacher
from .errors import ConfigError
from .files import atomic_torch_save

__all__ = [
    "PROBE_TIMEOUT_S",
    "TAIL_MIN_FILL",
    "ResidueVocabulary",
    "TrunkCache",
    "TrunkKey",
    "TrunkTailTeacher",
    "assert_rows_line_up",
    "check_tail_settings",
    "probe",
    "tail_settings",
    "tensor_fingerprint",
    "windows",
]

#: With the trunk cached, only the tail runs on each group: smaller, tighter groups cost
#: little and waste less on padding than the groups the whole model runs on.
TAIL_MIN_FILL = 0.9

#: how long :func:`probe` waits before declaring a download site unreachable
PROBE_TIMEOUT_S = 3.0


def check_tail_settings(config: Any) -> None:
    """Refuse, before any weights are loaded, the shared settings of a trunk/tail teacher's
    config (``trainable_layers``, ``max_tokens``, ``cache_mb``) that cannot work."""
    if config.trainable_layers < 0:
        raise ConfigError(f"[teacher] trainable_layers: {config.trainable_layers} must be >= 0")
    if config.max_tokens < 1:
        raise ConfigError(f"[teacher] max_tokens: {config.max_tokens} must be at least 1")
    if config.cache_mb < 0:
        raise ConfigError(f"[teacher] cache_mb: {config.cache_mb} must be >= 0")


def tail_settings(config: Any) -> dict[str, Any]:
    """The :class:`TrunkTailTeacher` keyword arguments a teacher config gives (``layer``,
    ``trainable_layers``, ``window``, ``stride``, ``max_tokens``, and the trunk cache made from
    ``cache``, ``cache_mb``, ``cache_dir``), so that every teacher reads them the same way."""
    cache = TrunkCache(config.cache_mb * 2**20, config.cache_dir) if config.cache else None
    return {
        "layer": config.layer,
        "trainable_layers": config.trainable_layers,
        "window": config.window,
        "stride": config.stride,
        "max_tokens": config.max_tokens,
        "cache": cache,
    }


def assert_rows_line_up(teacher: Teacher, graphs: Sequence[Any], atol: float = 1e-5) -> None:
    """Check the contract encoders rely on, for any teacher: embedding a batch's sequences
    gives ``[N, embed_dim]`` rows where row ``ptr[b] + i`` is residue ``i`` of protein ``b``,
    the same (to ``atol``) as embedding that protein alone. Raises ``AssertionError``.

    ``graphs`` are :class:`~protsteps.graph.ProteinGraph` objects (``protsteps.featurize``)."""
    from .graph import collate

    batch = collate(list(graphs))
    features = teacher(batch.sequences)
    expected = (batch.num_nodes, teacher.embed_dim)
    assert tuple(features.shape) == expected, f"teacher rows {tuple(features.shape)}, expected {expected}"
    for b, sequence in enumerate(batch.sequences):
        rows = features[int(batch.ptr[b]) : int(batch.ptr[b + 1])]
        torch.testing.assert_close(rows, teacher([sequence]), rtol=0, atol=atol)


def windows(length: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` spans covering ``0..length`` with at most ``window`` residues each.

    Starts are ``0, stride, 2 stride, ...``; the last window is aligned to the chain's end
    so that every window is full. A chain that fits is one span; an empty one has none.
    """
    if length <= 0:
        return []
    if length <= window:
        return [(0, length)]
    starts = [*range(0, length - window, stride), length - window]
    return [(s, s + window) for s in starts]


def tensor_fingerprint(header: str, tensors: Iterable[tuple[str, Tensor]]) -> str:
    """SHA-256 (hex) of ``header`` and of each tensor's label, dtype, shape and bytes, in
    order: the weights a trunk's output depends on, for :attr:`TrunkKey.fingerprint`."""
    digest = hashlib.sha256()
    digest.update(header.encode())
    for label, tensor in tensors:
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{label} {data.dtype} {tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Check within ``timeout`` seconds that a TCP connection to ``url``'s host (or to the
    HTTPS proxy, when one is configured) can be opened.

    Returns ``None`` when it can, otherwise a short reason. Name resolution is covered by the
    timeout too: it runs in a daemon thread that is abandoned when it takes too long.
    Teachers call it before a weights download, so that a machine without network fails in
    seconds, not after a library's retries.
    """
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or host, proxied.port or 80
    outcome: dict[str, BaseException | None] = {}

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome["error"] = None
        except BaseException as exc:  # any failure means unreachable; reported below
            outcome["error"] = exc

    thread = threading.Thread(target=connect, name=f"probe {host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" not in outcome:
        return f"{host} did not answer within {timeout:g} s"
    error = outcome["error"]
    if error is None:
        return None
    if isinstance(error, socket.gaierror):
        return f"{host} cannot be resolved (no network?)"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return f"{host} did not answer within {timeout:g} s"
    return f"{host} cannot be reached ({error})"


# -- the frozen-trunk cache -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrunkKey:
    """What the cached hidden states of one sequence depend on.

    model: the model's name (hub name, repo id or weights file stem), for the disk layout.
    fingerprint: SHA-256 of the trunk's weights and architecture (hex).
    layer: how many transformer layers the trunk has (the states are their output; 0 is the
        token embedding).
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

    Entries are ``[len + 2, embed_dim]`` tensors (the sequence between one start and one end
    token), kept on the CPU, detached.
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


# -- the teacher ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ResidueVocabulary:
    """How a model's tokenizer spells a protein.

    residues: token id of each one-letter residue code the model reads (upper case).
    start, end, padding: ids of the token before the residues (BOS, [CLS]), after them
        (EOS, [SEP]) and of padding.
    unknown: the code every other character is read as (it must be in ``residues``).
    """

    residues: Mapping[str, int]
    start: int
    end: int
    padding: int
    unknown: str = "X"

    def __post_init__(self) -> None:
        if self.unknown not in self.residues:
            raise ValueError(f"the unknown-residue code {self.unknown!r} has no token")

    def normalize(self, sequence: str) -> str:
        """Upper-case ``sequence`` and read every character without a residue token (gaps,
        digits, ``*``, ...) as :attr:`unknown`, one character per residue, so that the
        output stays aligned with the input."""
        return "".join(c if c in self.residues else self.unknown for c in sequence.upper())

    def tokens(self, segments: Sequence[str]) -> Tensor:
        """[B, T] long (CPU): start, residues, end, then padding; T = longest + 2."""
        width = max(len(s) for s in segments) + 2
        tokens = torch.full((len(segments), width), self.padding, dtype=torch.long)
        for b, seg in enumerate(segments):
            tokens[b, 0] = self.start
            tokens[b, 1 : len(seg) + 1] = torch.tensor([self.residues[c] for c in seg], dtype=torch.long)
            tokens[b, len(seg) + 1] = self.end
        return tokens


#: per batch of the uncached path: the sequences' indices, the trunk states, the padding mask
_TrunkBatch = tuple[list[int], Tensor, "Tensor | None"]


class TrunkTailTeacher(Teacher):
    """A :class:`~protsteps.Teacher` made of a frozen trunk and a trainable tail.

    Parameters
    ----------
    model:
        The whole language model. It is kept outside the module tree (see Notes), put in
        eval mode and frozen; the subclass builds :attr:`tail` from its last layers after
        calling this constructor, then calls ``self.train()``.
    vocabulary:
        The model's residue tokens, start, end and padding tokens.
    name:
        The model's name, part of the cache key.
    num_layers, embed_dim:
        The model's transformer layers ``L`` and width.
    layer:
        Representation layer ``0..L`` (0 is the embedding, ``i`` the output of layer ``i``);
        negative counts from the end (``-1`` = ``L``).
    trainable_layers:
        ``k``, the size of the tail, ``0..ℓ``: the layers just below the representation.
    window, stride, max_window:
        Chains longer than ``window`` residues (at most ``max_window``, what the model's
        positions allow) are embedded through windows starting every ``stride`` residues;
        overlapping rows are averaged.
    max_tokens:
        Most padded tokens (B x T, start/end tokens included) per forward pass where
        sequences run in padded groups (on accelerators; on CPU each runs alone, see
        :attr:`padded_groups`).
    cache:
        The trunk cache, or ``None`` to recompute the trunk at every call.
    weights_path, source:
        Where the weights came from, for ``describe()``.

    What a subclass provides
    ------------------------
    ``_trunk(tokens)``
        The frozen part, run without gradients: hidden states entering the tail and the
        padding mask ``[B, T]`` bool (True at padding; ``None`` when nothing is padded).
    ``_fingerprint_trunk()``
        SHA-256 of everything the trunk's output depends on (see :func:`tensor_fingerprint`).
    ``_trunk_weight``
        A trunk parameter whose device and dtype the hidden states take.
    ``tail``
        An ``nn.Module`` called as ``tail(states, padding_mask)``, returning states of the
        same shape; its parameters are the trainable ones.

    Hidden states are ``[T, B, E]`` when :attr:`time_major` (fair-esm's layout) and
    ``[B, T, E]`` otherwise.

    Notes
    -----
    The module's parameters, and so its ``state_dict``, hold only the tail: the frozen
    trunk is rebuilt from the weights, so checkpoints stay small and an optimiser over
    ``teacher.parameters()`` sees only what may be trained. ``.to()`` and the like move the
    trunk too, and ``train()`` leaves the trunk in eval mode.
    """

    #: hidden states are [T, B, E] (True) or [B, T, E] (False)
    time_major: ClassVar[bool] = False

    #: run sequences in padded groups of similar length (True) or each alone (False); None:
    #: alone on CPU, grouped elsewhere (see :meth:`_groups`)
    padded_groups: bool | None = None

    tail: nn.Module
    #: the whole model (trunk and tail), outside the module tree
    _model: nn.Module

    def __init__(
        self,
        model: nn.Module,
        vocabulary: ResidueVocabulary,
        *,
        name: str,
        num_layers: int,
        embed_dim: int,
        layer: int = -1,
        trainable_layers: int = 1,
        window: int,
        stride: int,
        max_window: int,
        max_tokens: int = 8192,
        cache: TrunkCache | None = None,
        weights_path: Path | None = None,
        source: str = "",
    ) -> None:
        super().__init__()
        resolved = layer if layer >= 0 else num_layers + 1 + layer
        if not 0 <= resolved <= num_layers:
            raise ConfigError(
                f"teacher layer {layer} is out of range: {name} has {num_layers} transformer layers, "
                f"so layer must be in 0..{num_layers} or -{num_layers + 1}..-1"
            )
        if not 0 <= trainable_layers <= resolved:
            raise ConfigError(
                f"teacher trainable_layers {trainable_layers} must be in 0..{resolved}: the tail is "
                f"made of the layers just below the representation (layer {resolved})"
            )
        if not 1 <= window <= max_window:
            raise ConfigError(f"teacher window {window} must be in 1..{max_window} residues")
        if not 1 <= stride <= window:
            raise ConfigError(f"teacher stride {stride} must be in 1..window ({window})")
        if max_tokens < 1:
            raise ConfigError(f"teacher max_tokens {max_tokens} must be at least 1")

        # Kept outside the module tree on purpose: see Notes.
        object.__setattr__(self, "_model", model.eval())
        self.vocabulary = vocabulary
        self.model_name = name
        self.weights_path = weights_path
        self.source = source
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.layer = resolved
        self.trainable_layers = trainable_layers
        self.trunk_layers = resolved - trainable_layers
        self.window = window
        self.stride = stride
        self.max_tokens = max_tokens
        self.cache = cache
        self._fingerprint: str | None = None
        # Without a cache, the trunk states of the last call: a pseudo bi-level step embeds
        # the same sequences twice (with theta and theta'), and the trunk is the same both times.
        self._last_trunk: tuple[Any, list[_TrunkBatch]] | None = None
        model.requires_grad_(False)

    # -- what a model provides ------------------------------------------------------------

    @abc.abstractmethod
    def _trunk(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """The frozen part (no gradients): states entering the tail and the padding mask
        [B, T] (True at padding, ``None`` without padding)."""

    @abc.abstractmethod
    def _fingerprint_trunk(self) -> str:
        """SHA-256 of the trunk's weights and architecture (and anything else its output
        depends on), without the tail."""

    @property
    @abc.abstractmethod
    def _trunk_weight(self) -> Tensor:
        """A trunk parameter: the device and dtype of the hidden states."""

    def normalize(self, sequence: str) -> str:
        """``sequence`` as the model reads it (see :meth:`ResidueVocabulary.normalize`)."""
        return self.vocabulary.normalize(sequence)

    def _tokens(self, segments: Sequence[str]) -> Tensor:
        """[B, T] long on the model's device: start, residues, end, then padding."""
        return self.vocabulary.tokens(segments).to(self._trunk_weight.device)

    # -- module plumbing ------------------------------------------------------------------

    def _apply(self, fn: Any, recurse: bool = True) -> TrunkTailTeacher:
        # conversions (.to, .cuda, .double, ...) are idempotent, so the shared tail layers
        # converted twice stay correct
        self._model._apply(fn, recurse)
        return super()._apply(fn, recurse)  # type: ignore[return-value]

    def train(self, mode: bool = True) -> TrunkTailTeacher:
        """Set the tail's mode; the frozen trunk always stays in eval mode."""
        self._model.eval()
        super().train(mode)
        return self

    def tail_parameters(self) -> dict[str, Tensor]:
        """The tail's parameters by name, the tensors themselves: gradients and optimisers
        act on the stored tail. Empty when k = 0."""
        return dict(self.tail.named_parameters())

    @property
    def trunk_fingerprint(self) -> str:
        """SHA-256 of the trunk's weights (computed on first use; part of the cache key)."""
        if self._fingerprint is None:
            self._fingerprint = self._fingerprint_trunk()
        return self._fingerprint

    def _describe_cache(self) -> str:
        if self.cache is None:
            return "off"
        text = f"{self.cache.max_bytes // 2**20} MiB in memory"
        if self.cache.directory is not None:
            text += f" + {self.cache.directory}"
        return text

    # -- forward --------------------------------------------------------------------------

    def forward(self, sequences: Sequence[str], tail: Mapping[str, Tensor] | None = None) -> Tensor:
        """Per-residue embeddings of ``sequences``.

        Parameters
        ----------
        sequences:
            One-letter sequences; characters the model has no residue token for are read as
            :meth:`normalize` says.
        tail:
            Replacement tail tensors by the names of :meth:`tail_parameters` (all of them),
            e.g. ``theta' = theta - alpha * grad`` built with ``create_graph=True``; the tail
            is evaluated with them through :func:`torch.func.functional_call` and gradients
            flow back to them. ``None`` uses the stored tail.

        Returns
        -------
        Tensor
            ``[sum(len(s)), embed_dim]``, the sequences' residues concatenated in order,
            start/end tokens and padding removed; rows of residues covered by several
            windows are the mean of those windows' rows.
        """
        if isinstance(sequences, str):
            raise TypeError("sequences must be a list of strings, not one string")
        replacement = self._check_tail(tail)
        normalized = [self.normalize(s) for s in sequences]
        plans = [
            [(a, b, seq[a:b]) for a, b in windows(len(seq), self.window, self.stride)] for seq in normalized
        ]
        segments = list(dict.fromkeys(seg for plan in plans for _, _, seg in plan))
        embedded = dict(zip(segments, self._embed_segments(segments, replacement), strict=True))
        rows = []
        for seq, plan in zip(normalized, plans, strict=True):
            if len(plan) == 1:
                rows.append(embedded[plan[0][2]])
            elif plan:
                rows.append(self._stitch(len(seq), [(a, b, embedded[seg]) for a, b, seg in plan]))
        if not rows:
            return self._trunk_weight.new_zeros(0, self.embed_dim)
        return torch.cat(rows)

    def precompute(self, sequences: Sequence[str]) -> int:
        """Fill the trunk cache for ``sequences`` (all their windows); returns how many
        windows had to be computed. Without a cache nothing happens and 0 is returned."""
        if self.cache is None:
            return 0
        segments = list(
            dict.fromkeys(
                seq[a:b]
                for seq in map(self.normalize, sequences)
                for a, b in windows(len(seq), self.window, self.stride)
            )
        )
        misses = self.cache.misses
        self._trunk_states(segments)
        return self.cache.misses - misses

    def _check_tail(self, tail: Mapping[str, Tensor] | None) -> dict[str, Tensor] | None:
        if tail is None:
            return None
        expected = set(dict(self.tail.named_parameters()))
        given = set(tail)
        if given != expected:
            parts = []
            if expected - given:
                parts.append(f"missing {', '.join(sorted(expected - given))}")
            if given - expected:
                parts.append(f"unknown {', '.join(sorted(given - expected))}")
            raise ValueError(f"tail tensors do not match tail_parameters(): {'; '.join(parts)}")
        return dict(tail)

    @staticmethod
    def _stitch(length: int, pieces: list[tuple[int, int, Tensor]]) -> Tensor:
        """Average window rows: pieces are (start, end, [end - start, E])."""
        first = pieces[0][2]
        total = first.new_zeros(length, first.shape[1])
        count = first.new_zeros(length, 1)
        for a, b, rows in pieces:
            total = total.index_add(0, torch.arange(a, b, device=rows.device), rows)
            count[a:b] += 1
        return total / count

    def _groups(self, lengths: Sequence[int], min_fill: float = 0.7) -> list[list[int]]:
        """Indices of the sequences that run through the model together.

        On CPU each sequence runs alone: nothing is padded, computed and thrown away, and its
        attention matrices (``[heads, T, T]``) stay small enough for the processor's caches,
        where a padded group's (``[B, heads, T, T]``, 16 MB for three 256-residue chains at
        20 heads) go to memory at every softmax, mask and product. Without the trunk cache a
        teacher step on 8 chains (ESM-2 t6, forward and backward into the tail) took 661
        instead of 855 CPU-ms (``benchmarks/teacher.py``), and a pseudo bi-level step of the
        default student ran 7.8 instead of 5.3 proteins per CPU-second
        (``benchmarks/steps_step.py``); with the cache, whose tail already ran in groups
        padded by at most a tenth, about the same. A sequence's states then do not
        depend on the others in the call, and the cached and uncached paths give the same
        bits. On an accelerator, sequences of similar length are grouped up to
        :attr:`max_tokens` (:meth:`_batches`), where fewer, larger calls are faster.
        :attr:`padded_groups` overrides the choice (``True``: groups, ``False``: alone).
        """
        padded = self.padded_groups
        if padded is None:
            padded = self._trunk_weight.device.type != "cpu"
        return self._batches(lengths, min_fill) if padded else [[i] for i in range(len(lengths))]

    def _batches(self, lengths: Sequence[int], min_fill: float = 0.7) -> list[list[int]]:
        """Indices grouped so that each group, padded to its longest member (tokens incl.
        start/end), holds at most ``max_tokens`` tokens, longest first; a sequence shorter
        than ``min_fill`` of its group's longest starts a new group, so that padding
        (computed and thrown away) stays below ``1 - min_fill`` of a group."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for i in order:
            if batches:
                longest = lengths[batches[-1][0]] + 2
                fits = (len(batches[-1]) + 1) * longest <= self.max_tokens
                if fits and lengths[i] + 2 >= min_fill * longest:
                    batches[-1].append(i)
                    continue
            batches.append([i])
        return batches

    def _rows(self, x: Tensor, b: int, start: int, stop: int) -> Tensor:
        """Token positions ``start:stop`` of batch member ``b``: [stop - start, E]."""
        return x[start:stop, b] if self.time_major else x[b, start:stop]

    def _run_tail(self, x: Tensor, mask: Tensor | None, replacement: dict[str, Tensor] | None) -> Tensor:
        if replacement is None:
            return self.tail(x, mask)  # type: ignore[no-any-return]
        return functional_call(self.tail, replacement, (x, mask))  # type: ignore[no-any-return]

    def _trunk_states(self, segments: Sequence[str]) -> list[Tensor]:
        """Per segment, [len + 2, E] states entering the tail, from the cache when possible."""
        assert self.cache is not None
        keys = [TrunkKey(self.model_name, self.trunk_fingerprint, self.trunk_layers, s) for s in segments]
        states: list[Tensor | None] = [self.cache.get(k) for k in keys]
        # Each missing sequence is run through the trunk alone, unpadded: a state computed in
        # a padded batch differs in its last bits with the batch's width and members (other
        # matrix shapes, other summation orders), so what the cache holds, and every run that
        # reads it afterwards, would depend on which run met the sequence first and beside
        # which others. Alone, a sequence's state is a function of the model and the sequence.
        for i, state in enumerate(states):
            if state is None:
                x, _ = self._trunk(self._tokens([segments[i]]))
                computed = self._rows(x, 0, 0, len(segments[i]) + 2)
                self.cache.put(keys[i], computed)
                states[i] = computed
        return states  # type: ignore[return-value]

    def _embed_segments(self, segments: Sequence[str], replacement: dict[str, Tensor] | None) -> list[Tensor]:
        """[len, E] embeddings per segment (each a window short enough for the model)."""
        lengths = [len(s) for s in segments]
        out: list[Tensor | None] = [None] * len(segments)
        weight = self._trunk_weight
        if self.cache is None:
            key = (tuple(segments), weight.device, weight.dtype)
            if self._last_trunk is not None and self._last_trunk[0] == key:
                trunk = self._last_trunk[1]
            else:
                trunk = []
                for batch in self._groups(lengths):
                    x, mask = self._trunk(self._tokens([segments[i] for i in batch]))
                    trunk.append((batch, x, mask))
                self._last_trunk = (key, trunk)
            for batch, x, mask in trunk:
                y = self._run_tail(x, mask, replacement)
                for b, i in enumerate(batch):
                    out[i] = self._rows(y, b, 1, lengths[i] + 1)
            return out  # type: ignore[return-value]
        states = self._trunk_states(segments)
        for batch in self._groups(lengths, TAIL_MIN_FILL):
            width = lengths[batch[0]] + 2
            # re-padded with zeros (what ESM2.forward gives padded positions; for models that
            # do not zero them the value is irrelevant: masked keys get no attention)
            shape = (width, len(batch)) if self.time_major else (len(batch), width)
            x = weight.new_zeros(*shape, self.embed_dim)
            mask = torch.zeros(len(batch), width, dtype=torch.bool, device=weight.device)
            for b, i in enumerate(batch):
                self._rows(x, b, 0, lengths[i] + 2).copy_(
                    states[i].to(device=weight.device, dtype=weight.dtype)
                )
                mask[b, lengths[i] + 2 :] = True
            y = self._run_tail(x, mask if bool(mask.any()) else None, replacement)
            for b, i in enumerate(batch):
                out[i] = self._rows(y, b, 1, lengths[i] + 1)
        return out  # type: ignore[return-value]
