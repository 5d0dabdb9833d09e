"""The ESM-2 teacher: per-residue embeddings with a trainable tail over a frozen trunk.

With ``L`` transformer layers, a chosen representation layer ``ℓ`` (``0..L``) and a tail of
``k`` layers, the model is split where fair-esm's ``ESM2.forward`` would produce the
representation ``ℓ``:

    tokens -> embedding (x 0.88 token-dropout rescaling, padding zeroed)
           -> layers 1 .. ℓ-k                        frozen trunk (cacheable)
           -> layers ℓ-k+1 .. ℓ  [+ final layer norm if ℓ = L]   trainable tail

so the output equals ``ESM2(tokens, repr_layers=[ℓ])["representations"][ℓ]`` with BOS, EOS
and padding removed. Layers above ``ℓ`` are never run. The attention padding mask is
passed to every layer exactly as ``ESM2.forward`` does (``None`` when a batch has no
padding), so a sequence's states do not depend on what it is batched with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import esm
import torch
from esm.model.esm2 import ESM2
from torch import Tensor, nn
from torch.func import functional_call

from protsteps import Teacher
from protsteps.errors import ConfigError

from ._cache import TrunkCache, TrunkKey
from ._config import MAX_WINDOW
from ._loading import trunk_fingerprint

__all__ = ["ESMTeacher", "TeacherTail", "normalize_sequence", "windows"]

#: one-letter codes ESM-2's vocabulary has for residues; anything else becomes X
_RESIDUE_CODES = frozenset("ACDEFGHIKLMNPQRSTVWYXBUZO")


def normalize_sequence(sequence: str) -> str:
    """Upper-case ``sequence`` and replace every character ESM-2 has no residue token for
    (gaps, digits, ``*``, ...) by ``X``, one character per residue, so the output stays
    aligned with the input."""
    return "".join(c if c in _RESIDUE_CODES else "X" for c in sequence.upper())


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


#: With the trunk cached, only the tail runs on each group: smaller, tighter groups cost
#: little and waste less on padding than the groups the whole model runs on.
TAIL_MIN_FILL = 0.9


class TeacherTail(nn.Module):
    """The trainable last layers of the teacher.

    Submodules are fair-esm's own ``TransformerLayer`` objects (shared with the full model,
    not copied), named as in fair-esm's state dict: ``layers.<i>.*`` and, when the last
    layer is the representation, ``emb_layer_norm_after.*``.
    """

    def __init__(self, layers: Mapping[int, nn.Module], final_norm: nn.Module | None) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({str(i): layer for i, layer in layers.items()})
        self.emb_layer_norm_after = final_norm

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        """x: [T, B, E] hidden states entering the tail; padding_mask: [B, T] bool (True at
        padding) or None. Returns [T, B, E]."""
        for layer in self.layers.values():
            x, _ = layer(x, self_attn_padding_mask=padding_mask)
        if self.emb_layer_norm_after is not None:
            x = self.emb_layer_norm_after(x)
        return x


class ESMTeacher(Teacher):
    """ESM-2 as a :class:`protsteps.Teacher`.

    Parameters
    ----------
    model, alphabet:
        A fair-esm ``ESM2`` and its alphabet (see :func:`~protsteps_esm.load_esm2`).
    name:
        The model's name, part of the cache key.
    layer:
        Representation layer ``0..L``; negative counts from the end (``-1`` = ``L``).
    trainable_layers:
        ``k``, the size of the tail, ``0..ℓ``.
    window, stride:
        Chains longer than ``window`` residues (at most 1,022) are embedded through windows
        starting every ``stride`` residues; overlapping rows are averaged.
    max_tokens:
        Most padded tokens (B x T, BOS/EOS included) per forward pass.
    cache:
        The trunk cache, or ``None`` to recompute the trunk at every call.
    weights_path, source:
        Where the weights came from, for :meth:`describe`.

    Notes
    -----
    The module's parameters, and so its ``state_dict``, hold only the tail: the frozen
    trunk is rebuilt from the weights file, so checkpoints stay small and an optimiser over
    ``teacher.parameters()`` sees only what may be trained. ``.to()`` and the like move the
    trunk too, and ``train()`` leaves the trunk in eval mode.
    """

    def __init__(
        self,
        model: ESM2,
        alphabet: esm.data.Alphabet,
        *,
        name: str = "esm2",
        layer: int = -1,
        trainable_layers: int = 1,
        window: int = MAX_WINDOW,
        stride: int = MAX_WINDOW // 2,
        max_tokens: int = 8192,
        cache: TrunkCache | None = None,
        weights_path: Path | None = None,
        source: str = "",
    ) -> None:
        super().__init__()
        num_layers = int(model.num_layers)
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
        if not 1 <= window <= MAX_WINDOW:
            raise ConfigError(f"teacher window {window} must be in 1..{MAX_WINDOW} residues")
        if not 1 <= stride <= window:
            raise ConfigError(f"teacher stride {stride} must be in 1..window ({window})")
        if max_tokens < 1:
            raise ConfigError(f"teacher max_tokens {max_tokens} must be at least 1")

        # Kept outside the module tree on purpose: see Notes.
        object.__setattr__(self, "_esm", model.eval())
        self.alphabet = alphabet
        self.model_name = name
        self.weights_path = weights_path
        self.source = source
        self.num_layers = num_layers
        self.embed_dim = int(model.embed_dim)
        self.layer = resolved
        self.trainable_layers = trainable_layers
        self.trunk_layers = resolved - trainable_layers
        self.window = window
        self.stride = stride
        self.max_tokens = max_tokens
        self.cache = cache
        self._fingerprint: str | None = None
        self._token_index = {c: alphabet.get_idx(c) for c in _RESIDUE_CODES}
        # Without a cache, the trunk states of the last call: a pseudo bi-level step embeds
        # the same sequences twice (with theta and theta'), and the trunk is the same both times.
        self._last_trunk: tuple[Any, list[tuple[list[int], Tensor, Tensor | None]]] | None = None

        model.requires_grad_(False)
        last_is_representation = resolved == num_layers and trainable_layers > 0
        self.tail = TeacherTail(
            {i: model.layers[i] for i in range(self.trunk_layers, resolved)},
            model.emb_layer_norm_after if last_is_representation else None,
        )
        self.tail.requires_grad_(True)
        self.train()

    # -- module plumbing ------------------------------------------------------------------

    @property
    def esm(self) -> ESM2:
        """The fair-esm model (trunk and tail; the tail's layers are shared with it)."""
        return self._esm  # type: ignore[no-any-return]

    def _apply(self, fn: Any, recurse: bool = True) -> ESMTeacher:
        # conversions (.to, .cuda, .double, ...) are idempotent, so the shared tail layers
        # converted twice stay correct
        self._esm._apply(fn, recurse)
        return super()._apply(fn, recurse)  # type: ignore[return-value]

    def train(self, mode: bool = True) -> ESMTeacher:
        """Set the tail's mode; the frozen trunk always stays in eval mode."""
        self._esm.eval()
        super().train(mode)
        return self

    def tail_parameters(self) -> dict[str, Tensor]:
        """The tail's parameters by name (``layers.5.fc1.weight``, ...), the tensors
        themselves: gradients and optimisers act on the stored tail. Empty when k = 0."""
        return dict(self.tail.named_parameters())

    @property
    def trunk_fingerprint(self) -> str:
        """SHA-256 of the trunk's weights (computed on first use; part of the cache key)."""
        if self._fingerprint is None:
            self._fingerprint = trunk_fingerprint(self._esm, self.trunk_layers)
        return self._fingerprint

    def describe(self) -> str:
        """One line for a run summary: model, weights, representation layer, tail, cache."""
        where = f" from {self.weights_path} ({self.source})" if self.weights_path else ""
        tail = ", ".join(f"layer {int(i) + 1}" for i in self.tail.layers) or "none (all frozen)"
        if self.tail.emb_layer_norm_after is not None:
            tail += " + final layer norm"
        if self.cache is None:
            cache = "off"
        else:
            cache = f"{self.cache.max_bytes // 2**20} MiB in memory"
            if self.cache.directory is not None:
                cache += f" + {self.cache.directory}"
        return (
            f"ESM-2 {self.model_name} ({self.num_layers} layers, dim {self.embed_dim}){where}; "
            f"representation: layer {self.layer}; trainable tail: {tail}; trunk cache: {cache}"
        )

    # -- forward ------------------------------------------------------------------------

    def forward(self, sequences: Sequence[str], tail: Mapping[str, Tensor] | None = None) -> Tensor:
        """Per-residue embeddings of ``sequences``.

        Parameters
        ----------
        sequences:
            One-letter sequences; characters without an ESM-2 residue token count as X.
        tail:
            Replacement tail tensors by the names of :meth:`tail_parameters` (all of them),
            e.g. ``theta' = theta - alpha * grad`` built with ``create_graph=True``; the tail
            is evaluated with them through :func:`torch.func.functional_call` and gradients
            flow back to them. ``None`` uses the stored tail.

        Returns
        -------
        Tensor
            ``[sum(len(s)), embed_dim]``, the sequences' residues concatenated in order,
            BOS/EOS/padding removed; rows of residues covered by several windows are the mean
            of those windows' rows.
        """
        if isinstance(sequences, str):
            raise TypeError("sequences must be a list of strings, not one string")
        replacement = self._check_tail(tail)
        if not torch.is_inference_mode_enabled():
            self._forget_inference_tables()
        normalized = [normalize_sequence(s) for s in sequences]
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
            weight = self._esm.embed_tokens.weight
            return weight.new_zeros(0, self.embed_dim)
        return torch.cat(rows)

    def precompute(self, sequences: Sequence[str]) -> int:
        """Fill the trunk cache for ``sequences`` (all their windows); returns how many
        windows had to be computed. Without a cache nothing happens and 0 is returned."""
        if self.cache is None:
            return 0
        segments = list(
            dict.fromkeys(
                seq[a:b]
                for seq in map(normalize_sequence, sequences)
                for a, b in windows(len(seq), self.window, self.stride)
            )
        )
        misses = self.cache.misses
        self._trunk_states(segments)
        return self.cache.misses - misses

    def _forget_inference_tables(self) -> None:
        """fair-esm's rotary embedding keeps cos/sin tables between calls; made under
        ``torch.inference_mode`` they would break a later call that records gradients."""
        for layer in self._esm.layers:
            rotary = layer.self_attn.rot_emb
            table = getattr(rotary, "_cos_cached", None)
            if isinstance(table, Tensor) and table.is_inference():
                rotary._seq_len_cached = None

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

    def _batches(self, lengths: Sequence[int], min_fill: float = 0.7) -> list[list[int]]:
        """Indices grouped so that each group, padded to its longest member (tokens incl.
        BOS/EOS), holds at most ``max_tokens`` tokens, longest first; a sequence shorter than
        ``min_fill`` of its group's longest starts a new group, so that padding (computed and
        thrown away) stays below ``1 - min_fill`` of a group."""
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

    def _tokens(self, segments: Sequence[str]) -> Tensor:
        """[B, T] long: BOS, residues, EOS, then padding (fair-esm's BatchConverter layout)."""
        a = self.alphabet
        width = max(len(s) for s in segments) + 2
        tokens = torch.full((len(segments), width), a.padding_idx, dtype=torch.long)
        for b, seg in enumerate(segments):
            tokens[b, 0] = a.cls_idx
            tokens[b, 1 : len(seg) + 1] = torch.tensor([self._token_index[c] for c in seg], dtype=torch.long)
            tokens[b, len(seg) + 1] = a.eos_idx
        return tokens.to(self._esm.embed_tokens.weight.device)

    def _trunk(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """The frozen part of ``ESM2.forward``: x [T, B, E] entering the tail, and the padding
        mask [B, T] (None without padding) as fair-esm passes it to its layers."""
        model = self._esm
        padding_mask = tokens.eq(model.padding_idx)
        with torch.no_grad():
            x = model.embed_scale * model.embed_tokens(tokens)
            if model.token_dropout:
                is_mask = tokens.eq(model.mask_idx)
                x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
                mask_ratio_train = 0.15 * 0.8
                observed = is_mask.sum(-1).to(x.dtype) / (~padding_mask).sum(-1)
                x = x * (1 - mask_ratio_train) / (1 - observed)[:, None, None]
            x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
            # time-major and contiguous, the layout the tail gets from the cache: fair-esm
            # keeps a transposed view, which makes every later op slower on CPU
            x = x.transpose(0, 1).contiguous()
            mask = padding_mask if padding_mask.any() else None
            for layer in model.layers[: self.trunk_layers]:
                x, _ = layer(x, self_attn_padding_mask=mask)
            if self.trunk_layers == self.num_layers:
                # k = 0 with the last layer: the final norm is frozen like everything else
                x = model.emb_layer_norm_after(x)
        return x, mask

    def _run_tail(self, x: Tensor, mask: Tensor | None, replacement: dict[str, Tensor] | None) -> Tensor:
        if replacement is None:
            return self.tail(x, mask)  # type: ignore[no-any-return]
        return functional_call(self.tail, replacement, (x, mask))  # type: ignore[no-any-return]

    def _trunk_states(self, segments: Sequence[str]) -> list[Tensor]:
        """Per segment, [len + 2, E] states entering the tail, from the cache when possible."""
        assert self.cache is not None
        keys = [TrunkKey(self.model_name, self.trunk_fingerprint, self.trunk_layers, s) for s in segments]
        states: list[Tensor | None] = [self.cache.get(k) for k in keys]
        missing = [i for i, s in enumerate(states) if s is None]
        for batch in self._batches([len(segments[i]) for i in missing]):
            chosen = [missing[j] for j in batch]
            x, _ = self._trunk(self._tokens([segments[i] for i in chosen]))
            for b, i in enumerate(chosen):
                computed = x[: len(segments[i]) + 2, b]
                self.cache.put(keys[i], computed)
                states[i] = computed
        return states  # type: ignore[return-value]

    def _embed_segments(self, segments: Sequence[str], replacement: dict[str, Tensor] | None) -> list[Tensor]:
        """[len, E] embeddings per segment (each a window short enough for the model)."""
        lengths = [len(s) for s in segments]
        out: list[Tensor | None] = [None] * len(segments)
        if self.cache is None:
            weight = self._esm.embed_tokens.weight
            key = (tuple(segments), weight.device, weight.dtype)
            if self._last_trunk is not None and self._last_trunk[0] == key:
                trunk = self._last_trunk[1]
            else:
                trunk = []
                for batch in self._batches(lengths):
                    x, mask = self._trunk(self._tokens([segments[i] for i in batch]))
                    trunk.append((batch, x, mask))
                self._last_trunk = (key, trunk)
            for batch, x, mask in trunk:
                y = self._run_tail(x, mask, replacement)
                for b, i in enumerate(batch):
                    out[i] = y[1 : lengths[i] + 1, b]
            return out  # type: ignore[return-value]
        states = self._trunk_states(segments)
        weight = self._esm.embed_tokens.weight
        for batch in self._batches(lengths, TAIL_MIN_FILL):
            width = lengths[batch[0]] + 2
            # re-padded with zeros, as ESM2.forward zeroes padded embeddings
            x = weight.new_zeros(width, len(batch), self.embed_dim)
            mask = torch.zeros(len(batch), width, dtype=torch.bool, device=weight.device)
            for b, i in enumerate(batch):
                x[: lengths[i] + 2, b] = states[i].to(device=weight.device, dtype=weight.dtype)
                mask[b, lengths[i] + 2 :] = True
            y = self._run_tail(x, mask if bool(mask.any()) else None, replacement)
            for b, i in enumerate(batch):
                out[i] = y[1 : lengths[i] + 1, b]
        return out  # type: ignore[return-value]
