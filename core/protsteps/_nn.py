"""The component base classes that are torch modules: :class:`Encoder`, :class:`PretextTask`
and :class:`Teacher`.

They are documented and imported as ``protsteps.components.Encoder`` (and so on);
:mod:`protsteps.components` loads this module on first use, so that registering a component
(and so starting the command line) does not import torch.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from .components import EncoderOutput, TaskOutput

if TYPE_CHECKING:
    from .graph import Batch

__all__ = ["Encoder", "PretextTask", "Teacher"]


class Encoder(nn.Module, abc.ABC):
    """Embeds a batch of residue graphs.

    Every encoder is called the same way, ``encoder(batch, teacher_features)``, where
    ``teacher_features`` is ``[N, teacher_dim]`` aligned with the batch's residues or
    ``None`` without a teacher; it returns an :class:`EncoderOutput`.
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    #: width d of the embeddings
    out_dim: int
    #: width of :attr:`EncoderOutput.structure`, or ``None`` when the encoder does not
    #: return one (the pseudo bi-level scheme's ``structure_view = "gnn"`` needs it)
    structure_dim: int | None = None
    #: irreps of :attr:`EncoderOutput.vectors` (an e3nn irreps string), or ``None`` when the
    #: encoder returns none
    vector_irreps: str | None = None

    @abc.abstractmethod
    def forward(self, batch: Batch, teacher_features: Tensor | None = None) -> EncoderOutput: ...


class PretextTask(nn.Module, abc.ABC):
    """A self-supervised objective with its own head.

    A training step calls :meth:`corrupt` on the batch before the encoder runs (masking
    inputs, say) and :meth:`forward` on the encoder's output afterwards.
    """

    requires: ClassVar[frozenset[str]] = frozenset()

    def corrupt(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[Batch, Any]:
        """Return the batch the encoder should see and the state :meth:`forward` needs.
        The default changes nothing."""
        return batch, None

    @abc.abstractmethod
    def forward(self, batch: Batch, output: EncoderOutput, state: Any = None) -> TaskOutput: ...


class Teacher(nn.Module, abc.ABC):
    """A protein language model that embeds sequences residue by residue.

    The frozen part of the model stays frozen; the trainable tail is exposed by
    :meth:`tail_parameters` so that a scheme can evaluate the teacher with other tail
    weights (``forward(sequences, tail=...)``) and differentiate through them.
    """

    #: width of the per-residue embeddings
    embed_dim: int
    #: ``True`` when the teacher's ``state_dict`` is rebuilt bit for bit from its config (its
    #: weights come from a file or hub the config names, nothing is drawn at random): then
    #: ``encoder.pt`` carries only a fingerprint of that state, unless training changed it.
    #: ``False`` (the default): ``encoder.pt`` carries the whole ``state_dict``, so that
    #: ``finetune`` and ``embed`` rebuild the teacher exactly.
    stateless: ClassVar[bool] = False

    @abc.abstractmethod
    def tail_parameters(self) -> dict[str, Tensor]:
        """The trainable tail's parameters by name."""

    @abc.abstractmethod
    def forward(self, sequences: list[str], tail: Mapping[str, Tensor] | None = None) -> Tensor:
        """Per-residue embeddings ``[sum(len(s)), embed_dim]``, the sequences concatenated in
        order (aligned with a :class:`~protsteps.graph.Batch`'s residues)."""


# the names under which users know them (reprs, pickles by reference, docs)
for _base in (Encoder, PretextTask, Teacher):
    _base.__module__ = "protsteps.components"
