"""The ProtBert teacher: per-residue embeddings with a trainable tail over a frozen trunk.

With ``L`` transformer layers (30 in ProtBert), a representation layer ``ℓ`` and a tail of
``k`` layers, transformers' ``BertModel`` is split where it produces ``hidden_states[ℓ]``:

    [CLS] residues [SEP] -> embeddings (word + position + token type, layer norm)
                         -> layers 1 .. ℓ-k          frozen trunk (cacheable)
                         -> layers ℓ-k+1 .. ℓ        trainable tail

The defaults (``ℓ = L``, ``k = 1``) are the STEPS authors' choice: they froze the embeddings
and ``encoder.layer[:29]`` and trained the last layer. With ``ℓ = L`` the output equals
``BertModel(input_ids, attention_mask).last_hidden_state`` with [CLS], [SEP] and padding
removed.

Each layer is transformers' own ``BertLayer``, called with an additive attention mask
(``0`` for tokens, the dtype's minimum for padding, ``[B, 1, 1, T]``): the form the eager
and the SDPA attention of every transformers version from 4.40 add to the attention scores,
so padded keys get exactly zero weight and a sequence's embedding does not depend on what
it is batched with. Positions are absolute and padding is at the end, so a residue's
position is the same in any batch.

In the tail, SDPA attention is held to its math backend: the fused CPU and GPU kernels have
no second derivative, and the pseudo bi-level step differentiates through the tail twice.

The whole model, tail included, always runs in eval mode, as the authors ran it: no dropout,
so the output does not depend on ``train()`` / ``eval()`` (ProtBert's own dropout rates are
0 anyway; a fine-tuned copy may have others).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from protsteps.teachers import ResidueVocabulary, TrunkCache, TrunkTailTeacher, tensor_fingerprint

__all__ = ["BertTail", "ProtBertTeacher", "additive_mask", "run_layers"]


def additive_mask(padding_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """[B, T] bool (True at padding) -> [B, 1, 1, T] added to attention scores: 0 where a
    token may be attended to, the dtype's minimum where it is padding."""
    if padding_mask is None:
        return None
    mask = torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device)
    return mask.masked_fill(padding_mask, torch.finfo(dtype).min)[:, None, None, :]


def run_layers(layers: Iterable[nn.Module], x: Tensor, padding_mask: Tensor | None) -> Tensor:
    """x [B, T, E] through transformers ``BertLayer`` modules in order."""
    mask = additive_mask(padding_mask, x.dtype)
    for layer in layers:
        out = layer(x, mask)
        # a tensor since transformers 5, a tuple (hidden states first) before
        x = out[0] if isinstance(out, tuple) else out
    return x


class _Encoder(nn.Module):
    def __init__(self, layers: Mapping[int, nn.Module]) -> None:
        super().__init__()
        self.layer = nn.ModuleDict({str(i): layer for i, layer in layers.items()})


class BertTail(nn.Module):
    """The trainable last layers of the teacher.

    Submodules are transformers' own ``BertLayer`` objects (shared with the full model, not
    copied), named as in ``BertModel``'s state dict: ``encoder.layer.<i>.*`` (0-based, so
    ProtBert's last layer is ``encoder.layer.29``).
    """

    def __init__(self, layers: Mapping[int, nn.Module]) -> None:
        super().__init__()
        self.encoder = _Encoder(layers)

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        """x: [B, T, E] hidden states entering the tail; padding_mask: [B, T] bool (True at
        padding) or None. Returns [B, T, E].

        Attention through SDPA runs on its math backend here: the fused kernels have no
        second derivative, which the pseudo bi-level step takes through the tail."""
        with sdpa_kernel(SDPBackend.MATH):
            return run_layers(self.encoder.layer.values(), x, padding_mask)


class ProtBertTeacher(TrunkTailTeacher):
    """ProtBert (or any transformers ``BertModel`` over one-letter residues) as a
    :class:`protsteps.Teacher`.

    Parameters
    ----------
    model:
        A transformers ``BertModel`` (see :func:`~protsteps_protbert.load_protbert`).
    vocabulary:
        How its tokenizer spells residues (:func:`~protsteps_protbert.residue_vocabulary`).
    name:
        The model's name, part of the cache key.
    layer, trainable_layers:
        Representation layer ``0..L`` (negative counts from the end) and the size ``k`` of
        the tail below it.
    window, stride:
        Chains longer than ``window`` residues are embedded through windows starting every
        ``stride`` residues, averaged where they overlap; ``window`` is at most
        ``max_position_embeddings - 2`` ([CLS] and [SEP] take a position each), which is
        also the default.
    max_tokens:
        Most padded tokens (B x T, [CLS]/[SEP] included) per forward pass.
    cache:
        The trunk cache, or ``None`` to recompute the trunk at every call.
    weights_path, source:
        Where the weights came from, for :meth:`describe`.

    ``tail_parameters()`` names are ``BertModel``'s (``encoder.layer.29.attention.self.query.weight``,
    ..., ``encoder.layer.29.output.LayerNorm.bias``).
    """

    # the tail is the released model's own last layers: rebuilt bit for bit from the config
    stateless = True

    def __init__(
        self,
        model: Any,
        vocabulary: ResidueVocabulary,
        *,
        name: str = "prot_bert",
        layer: int = -1,
        trainable_layers: int = 1,
        window: int | None = None,
        stride: int | None = None,
        max_tokens: int = 8192,
        cache: TrunkCache | None = None,
        weights_path: Path | None = None,
        source: str = "",
    ) -> None:
        config = model.config
        max_window = int(config.max_position_embeddings) - 2
        window = max_window if window is None else window
        super().__init__(
            model,
            vocabulary,
            name=name,
            num_layers=int(config.num_hidden_layers),
            embed_dim=int(config.hidden_size),
            layer=layer,
            trainable_layers=trainable_layers,
            window=window,
            stride=max(1, window // 2) if stride is None else stride,
            max_window=max_window,
            max_tokens=max_tokens,
            cache=cache,
            weights_path=weights_path,
            source=source,
        )
        layers = model.encoder.layer
        self.tail = BertTail({i: layers[i] for i in range(self.trunk_layers, self.layer)})
        self.tail.requires_grad_(True)
        self.train()

    @property
    def bert(self) -> Any:
        """The transformers ``BertModel`` (trunk and tail; the tail's layers are shared with it)."""
        return self._model

    @property
    def _trunk_weight(self) -> Tensor:
        return self.bert.embeddings.word_embeddings.weight  # type: ignore[no-any-return]

    def train(self, mode: bool = True) -> ProtBertTeacher:
        """Set the module's mode; the model, tail included, stays in eval mode (no dropout,
        as the STEPS authors ran ProtBert)."""
        super().train(mode)
        self.tail.eval()
        return self

    def _fingerprint_trunk(self) -> str:
        """The architecture, the residue tokens, the embeddings and the first
        ``trunk_layers`` layers (names, dtypes, shapes, bytes); not the tail."""
        c = self.bert.config
        tokens = ",".join(f"{r}={i}" for r, i in sorted(self.vocabulary.residues.items()))
        header = (
            f"bert layers={c.num_hidden_layers} dim={c.hidden_size} heads={c.num_attention_heads} "
            f"ffn={c.intermediate_size} act={c.hidden_act} eps={c.layer_norm_eps} "
            f"positions={c.max_position_embeddings} "
            f"position_type={getattr(c, 'position_embedding_type', 'absolute')} "
            f"tokens={tokens} start={self.vocabulary.start} end={self.vocabulary.end} "
            f"trunk={self.trunk_layers}"
        )
        tensors = [(f"embeddings.{n}", t) for n, t in self.bert.embeddings.state_dict().items()]
        for i in range(self.trunk_layers):
            tensors += [
                (f"encoder.layer.{i}.{n}", t) for n, t in self.bert.encoder.layer[i].state_dict().items()
            ]
        return tensor_fingerprint(header, tensors)

    def describe(self) -> str:
        """One line for a run summary: model, weights, representation layer, tail, cache."""
        where = f" from {self.weights_path} ({self.source})" if self.weights_path else ""
        tail = ", ".join(f"layer {int(i) + 1}" for i in self.tail.encoder.layer) or "none (all frozen)"
        return (
            f"ProtBert {self.model_name} ({self.num_layers} layers, dim {self.embed_dim}){where}; "
            f"representation: layer {self.layer}; trainable tail: {tail}; "
            f"trunk cache: {self._describe_cache()}"
        )

    def _trunk(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """Embeddings and the frozen layers: x [B, T, E] entering the tail and the padding
        mask [B, T] (None without padding)."""
        bert = self.bert
        padding = tokens.eq(self.vocabulary.padding)
        mask = padding if bool(padding.any()) else None
        with torch.no_grad():
            # token type 0 everywhere and positions 0..T-1: BertModel's defaults
            x = bert.embeddings(input_ids=tokens, token_type_ids=torch.zeros_like(tokens))
            x = run_layers(bert.encoder.layer[: self.trunk_layers], x, mask)
        return x, mask
