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

Windows, batching, the trunk cache and replacement tails come from
:class:`protsteps.teachers.TrunkTailTeacher`; this module holds what is ESM-2's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import esm
import torch
from esm.model.esm2 import ESM2
from torch import Tensor, nn

from protsteps.teachers import TAIL_MIN_FILL, ResidueVocabulary, TrunkCache, TrunkTailTeacher, windows

from ._config import MAX_WINDOW
from ._loading import trunk_fingerprint

__all__ = ["TAIL_MIN_FILL", "ESMTeacher", "TeacherTail", "normalize_sequence", "windows"]

#: one-letter codes ESM-2's vocabulary has for residues; anything else becomes X
_RESIDUE_CODES = frozenset("ACDEFGHIKLMNPQRSTVWYXBUZO")


def normalize_sequence(sequence: str) -> str:
    """Upper-case ``sequence`` and replace every character ESM-2 has no residue token for
    (gaps, digits, ``*``, ...) by ``X``, one character per residue, so the output stays
    aligned with the input."""
    return "".join(c if c in _RESIDUE_CODES else "X" for c in sequence.upper())


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


class ESMTeacher(TrunkTailTeacher):
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

    ``tail_parameters()`` names are fair-esm's (``layers.5.fc1.weight``, ...,
    ``emb_layer_norm_after.weight``).

    Notes
    -----
    The module's parameters, and so its ``state_dict``, hold only the tail: the frozen
    trunk is rebuilt from the weights file, so checkpoints stay small and an optimiser over
    ``teacher.parameters()`` sees only what may be trained. ``.to()`` and the like move the
    trunk too, and ``train()`` leaves the trunk in eval mode.
    """

    # the tail is the released model's own last layers: rebuilt bit for bit from the config
    stateless = True

    # fair-esm's layers take time-major states
    time_major = True

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
        vocabulary = ResidueVocabulary(
            {c: alphabet.get_idx(c) for c in _RESIDUE_CODES},
            start=alphabet.cls_idx,
            end=alphabet.eos_idx,
            padding=alphabet.padding_idx,
        )
        super().__init__(
            model,
            vocabulary,
            name=name,
            num_layers=int(model.num_layers),
            embed_dim=int(model.embed_dim),
            layer=layer,
            trainable_layers=trainable_layers,
            window=window,
            stride=stride,
            max_window=MAX_WINDOW,
            max_tokens=max_tokens,
            cache=cache,
            weights_path=weights_path,
            source=source,
        )
        self.alphabet = alphabet
        last_is_representation = self.layer == self.num_layers and trainable_layers > 0
        self.tail = TeacherTail(
            {i: model.layers[i] for i in range(self.trunk_layers, self.layer)},
            model.emb_layer_norm_after if last_is_representation else None,
        )
        self.tail.requires_grad_(True)
        self.train()

    @property
    def esm(self) -> ESM2:
        """The fair-esm model (trunk and tail; the tail's layers are shared with it)."""
        return self._model  # type: ignore[no-any-return]

    @property
    def _trunk_weight(self) -> Tensor:
        return self.esm.embed_tokens.weight

    def _fingerprint_trunk(self) -> str:
        return trunk_fingerprint(self.esm, self.trunk_layers)

    def describe(self) -> str:
        """One line for a run summary: model, weights, representation layer, tail, cache."""
        where = f" from {self.weights_path} ({self.source})" if self.weights_path else ""
        tail = ", ".join(f"layer {int(i) + 1}" for i in self.tail.layers) or "none (all frozen)"
        if self.tail.emb_layer_norm_after is not None:
            tail += " + final layer norm"
        return (
            f"ESM-2 {self.model_name} ({self.num_layers} layers, dim {self.embed_dim}){where}; "
            f"representation: layer {self.layer}; trainable tail: {tail}; trunk cache: {self._describe_cache()}"
        )

    def forward(self, sequences: Sequence[str], tail: Mapping[str, Tensor] | None = None) -> Tensor:
        """Per-residue embeddings ``[sum(len(s)), embed_dim]``; see
        :meth:`protsteps.teachers.TrunkTailTeacher.forward`."""
        if not torch.is_inference_mode_enabled():
            self._forget_inference_tables()
        return super().forward(sequences, tail)

    def _forget_inference_tables(self) -> None:
        """fair-esm's rotary embedding keeps cos/sin tables between calls; made under
        ``torch.inference_mode`` they would break a later call that records gradients."""
        for layer in self.esm.layers:
            rotary = layer.self_attn.rot_emb
            table = getattr(rotary, "_cos_cached", None)
            if isinstance(table, Tensor) and table.is_inference():
                rotary._seq_len_cached = None

    def _trunk(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """The frozen part of ``ESM2.forward``: x [T, B, E] entering the tail, and the padding
        mask [B, T] (None without padding) as fair-esm passes it to its layers."""
        model = self.esm
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
