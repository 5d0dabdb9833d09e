"""The five kinds of component and the contracts between them.

A plugin hands protsteps :class:`Component` records (a name, a factory, a config dataclass
and a one-line description); protsteps builds them with ``factory(config, context)``.

=========== =========================================================== =====================
kind        what one is                                                  base class
=========== =========================================================== =====================
featurizer  one parsed chain -> :class:`~protsteps.graph.ProteinGraph`   :class:`Featurizer`
encoder     :class:`~protsteps.graph.Batch` (+ teacher features) ->      :class:`Encoder`
            per-residue and per-protein embeddings
task        corrupts its input if it must, owns a head, returns a loss  :class:`PretextTask`
teacher     sequences -> per-residue embeddings; a trainable tail        :class:`Teacher`
scheme      one optimisation step over a batch                           :class:`Scheme`
=========== =========================================================== =====================

Components declare the batch attributes they need (``requires``) and featurizers the ones
they fill (``provides``), so that a composition that cannot work fails when it is built.
Beyond batch attributes, a :class:`Component` declares its *capabilities* (what it offers the
others: an encoder's per-residue output, a teacher's trainable tail) and its *needs* (what it
asks of the others: ``"encoder.per_residue"``, ``"teacher.tail"``, ``"batch>=2"``);
:func:`~protsteps.model.compose` checks every need before anything is featurized or written
(see :mod:`protsteps.capabilities`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ._nn import Encoder, PretextTask, Teacher
    from .graph import Batch, ProteinGraph
    from .optim import SchemeSetup
    from .structure import Chain

__all__ = [
    "KINDS",
    "Kind",
    "ENCODER_CAPABILITIES",
    "TEACHER_CAPABILITIES",
    "Need",
    "GRAPH_ATTRIBUTES",
    "Component",
    "BuildContext",
    "EncoderOutput",
    "TaskOutput",
    "Featurizer",
    "Encoder",
    "PretextTask",
    "Teacher",
    "Scheme",
]

Kind = Literal["featurizer", "encoder", "task", "teacher", "scheme"]
KINDS: tuple[Kind, ...] = ("featurizer", "encoder", "task", "teacher", "scheme")

#: Batch attributes a featurizer can fill and a component can require.
GRAPH_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "residue_type",
        "pos",
        "backbone",
        "dihedrals",
        "edge_index",
        "edge_distance",
        "edge_vector",
        "edge_attr",
        "node_attr",
    }
)


#: What an encoder's output can offer (:class:`EncoderOutput`): ``per_residue`` (``node``),
#: ``per_protein`` (``graph``), ``structure`` (the pre-residual ``structure`` view, with
#: :attr:`Encoder.structure_dim`), ``vectors`` (``vectors``, with :attr:`Encoder.vector_irreps`).
ENCODER_CAPABILITIES: dict[str, str] = {
    "per_residue": "per-residue embeddings (EncoderOutput.node)",
    "per_protein": "per-protein embeddings (EncoderOutput.graph)",
    "structure": "the structure view before the teacher residual (EncoderOutput.structure)",
    "vectors": "vector features with irreps (EncoderOutput.vectors)",
}

#: What a teacher can offer: ``tail``, a trainable tail (non-empty
#: :meth:`Teacher.tail_parameters`).
TEACHER_CAPABILITIES: dict[str, str] = {
    "tail": "a trainable tail (Teacher.tail_parameters)",
}


@dataclasses.dataclass(frozen=True)
class Need:
    """One thing a component asks of the rest of the composition.

    ``what`` is ``"teacher"`` (a teacher is composed), ``"teacher.CAPABILITY"`` or
    ``"encoder.CAPABILITY"`` (that component offers the capability), or ``"batch>=N"``
    (batches of at least ``N`` proteins: ``[train] batch_size`` when ``max_residues`` is 0).
    ``hint`` is the way out the error adds (``'or set scheme.negatives = "previous"'``).
    A plain string is a :class:`Need` without a hint.
    """

    what: str
    hint: str = ""


#: What :attr:`Component.capabilities` and :attr:`Component.needs` accept: a list, or a
#: function of the component's config object that returns one.
Declaration = Iterable[Any] | Callable[[Any], Iterable[Any]]


@dataclasses.dataclass(frozen=True)
class Component:
    """What a plugin registers: one named component of one kind.

    Parameters
    ----------
    name:
        The name users write in configs (``gin``, ``distance``). Lower case, no spaces.
    factory:
        ``factory(config, context) -> component``; a class whose ``__init__`` takes
        ``(config, context)`` works.
    config:
        A dataclass whose fields are made with :func:`protsteps.config.option`.
    description:
        One line for ``protsteps plugins``.
    capabilities:
        What the component offers the others beyond batch attributes (an encoder:
        :data:`ENCODER_CAPABILITIES`; a teacher: :data:`TEACHER_CAPABILITIES`; any other
        lower-case word a plugin's components agree on), as a list or a function of the
        config (``lambda c: ["tail"] if c.trainable_layers else []``). ``None`` (the default):
        read from the built component (its ``capabilities`` attribute, else an encoder offers
        ``per_residue`` and ``per_protein``, plus ``structure`` when its ``structure_dim`` is
        set and ``vectors`` when its ``vector_irreps`` is; a teacher offers ``tail`` when its
        :meth:`Teacher.tail_parameters` is not empty). Declared here, they are checked before
        anything is built.
    needs:
        What the component asks of the others: :class:`Need` records or strings
        (``"encoder.per_residue"``, ``"teacher.tail"``, ``"batch>=2"``), as a list or a
        function of the config.
    auto:
        For teachers and schemes: the component's place in ``name = "auto"`` (lower is tried
        first; ties by name); ``None`` (the default) keeps it out of ``auto``.
    """

    name: str
    factory: Callable[[Any, BuildContext], Any]
    config: type
    description: str
    capabilities: Declaration | None = None
    needs: Declaration = ()
    auto: int | None = None


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a factory may need to know about the rest of the composition.

    :func:`~protsteps.model.compose` builds the featurizer, then the teacher, the encoder,
    the tasks and the scheme, and each later component sees more: every field is ``None``
    when unknown (a component built alone in a notebook, or a field that only later
    components get). ``provides`` ``None`` skips the requirement check.

    Attributes
    ----------
    provides:
        The batch attributes the featurizer fills (its ``provides``).
    featurizer, featurizer_config:
        The featurizer's name and its config object (e.g. a ``ResidueGraphConfig``: read
        ``radius`` or ``rbf`` from it when a layer depends on them).
    edge_attr_irreps, node_attr_irreps:
        How the columns of ``batch.edge_attr`` / ``batch.node_attr`` transform, as e3nn
        irreps strings in column order (the featurizer's ``edge_attr_irreps`` /
        ``node_attr_irreps``): ``"16x0e + 1x0e + 1x1o"``; ``""`` when it fills none.
    edge_attr_dim, node_attr_dim:
        The number of columns of ``batch.edge_attr`` / ``batch.node_attr`` (the
        featurizer's ``edge_attr_dim`` / ``node_attr_dim`` when it has them, else the
        dimension of the irreps); 0 when the featurizer fills none.
    teacher_dim:
        Width of the teacher's per-residue features; ``None`` without a teacher.
    encoder_dim:
        The encoder's ``out_dim``, for tasks and schemes.
    device:
        Where the component will run, when known.
    encoder, structure_dim:
        The encoder's name and the width of its :attr:`EncoderOutput.structure` (``None``
        when it does not expose one), for tasks and schemes.
    tasks:
        The composed pretext tasks' names mapped to their weights, in run-file order, for
        schemes (``context.tasks["distance"] == 1.0``).
    """

    provides: frozenset[str] | None = None
    featurizer: str | None = None
    teacher_dim: int | None = None
    encoder_dim: int | None = None
    device: torch.device | None = None
    encoder: str | None = None
    structure_dim: int | None = None
    featurizer_config: Any = None
    edge_attr_irreps: str | None = None
    node_attr_irreps: str | None = None
    edge_attr_dim: int | None = None
    node_attr_dim: int | None = None
    tasks: Mapping[str, float] | None = None


@dataclasses.dataclass
class EncoderOutput:
    """Embeddings produced by an encoder.

    node: [N, d] float, one row per residue of the batch.
    graph: [B, d] float, one row per protein (mean over its residues unless an encoder
    documents otherwise).
    structure: [N, d_s] float or ``None``, the message-passing output *before* any residual
    from the node inputs (which hold the teacher's features): what the encoder computed from
    the structure. With teacher features that carry no gradient it does not depend on the
    teacher at all, which is what makes it STEPS' structure view (the pseudo bi-level
    scheme's ``structure_view = "gnn"``). ``None`` when the encoder does not expose it;
    an encoder that does sets :attr:`Encoder.structure_dim` to ``d_s``.
    vectors: [N, d_v] float or ``None``, per-residue features that transform as the e3nn
    irreps :attr:`Encoder.vector_irreps` (``"8x1o"``: eight vectors per residue) when the
    structure is rotated; an encoder that returns them sets ``vector_irreps``.

    ``node`` or ``graph`` may be ``None`` for an encoder that does not produce it; such an
    encoder declares its capabilities (see :class:`Component`) so that a task needing the
    missing one is refused when the run is composed.
    """

    node: Tensor
    graph: Tensor
    structure: Tensor | None = None
    vectors: Tensor | None = None


@dataclasses.dataclass
class TaskOutput:
    """A pretext task's result on one batch: a scalar ``loss`` to minimise and detached
    ``metrics`` (floats or 0-d tensors) to log, keyed without the task name."""

    loss: Tensor
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


class Featurizer(abc.ABC):
    """Turns one parsed chain into a :class:`~protsteps.graph.ProteinGraph`.

    Featurizers run in worker processes and their output is cached by (file bytes, name,
    config), so ``__call__`` must be a pure function of the chain and the config.
    """

    #: the batch attributes this featurizer fills (see :data:`GRAPH_ATTRIBUTES`)
    provides: frozenset[str] = frozenset()
    #: how the columns of ``edge_attr`` / ``node_attr`` transform when the structure is
    #: rotated or mirrored, as an e3nn irreps string in column order (``"16x0e"``: invariant
    #: features; ``"1x0e + 1x1o + 1x2e"``: spherical harmonics of a direction); ``""`` when
    #: there are none, ``None`` when unknown. Equivariance checks and equivariant encoders
    #: read them.
    edge_attr_irreps: str | None = ""
    node_attr_irreps: str | None = ""

    @abc.abstractmethod
    def __call__(self, chain: Chain) -> ProteinGraph: ...


class Scheme(abc.ABC):
    """How the parameters are updated: one call of :meth:`step` per batch.

    The training loop builds the scheme, calls :meth:`setup` once with a
    :class:`~protsteps.optim.SchemeSetup` (the model, the train config, the number of steps,
    the DDP wrapper), then :meth:`step` per batch. :meth:`step` raises
    :class:`~protsteps.optim.NonFiniteLossError` before changing any parameter when a loss is
    not finite. :meth:`state_dict` holds everything needed to resume (optimizer, scheduler
    and any module the scheme owns).

    A step goes corrupt (:meth:`~protsteps.model.PretrainModel.corrupt`) -> teacher
    (``teacher_features``) -> encoder and tasks (``setup.wrap(model)(batch, states,
    features)``) -> finiteness check -> optimiser step; :mod:`protsteps.optim` has the helpers
    (:class:`~protsteps.optim.StudentOptimisation`,
    :func:`~protsteps.optim.raise_if_not_finite`, :func:`~protsteps.optim.logs_to_floats`).
    "Write a scheme" in ``docs/plugins.md`` is the whole contract.
    """

    @abc.abstractmethod
    def setup(self, setup: SchemeSetup) -> None: ...

    @abc.abstractmethod
    def step(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, float]:
        """One optimisation step; returns floats to log (``loss``, ``lr``, per-task values)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


#: the base classes that are torch modules live in :mod:`protsteps._nn`, so that what a
#: plugin registers (:class:`Component`, configs) imports without torch and the command
#: line starts at once; they are imported on first use, under these names
_TORCH_BASES = frozenset({"Encoder", "PretextTask", "Teacher"})


def __getattr__(name: str) -> Any:
    if name in _TORCH_BASES:
        from . import _nn

        return getattr(_nn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_TORCH_BASES})
