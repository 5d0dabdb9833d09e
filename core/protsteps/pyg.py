"""PyTorch Geometric interop: protsteps graphs as ``torch_geometric.data.Data`` and back.

>>> import protsteps
>>> graph = protsteps.featurize("1abc.pdb")[0]            # doctest: +SKIP
>>> data = graph.to_pyg()                                  # doctest: +SKIP
>>> data.x.shape, data.edge_index.shape                    # doctest: +SKIP
(torch.Size([58, 21]), torch.Size([2, 812]))
>>> protsteps.ProteinGraph.from_pyg(data)                  # doctest: +SKIP

Needs ``torch_geometric`` (``pip install "protsteps[pyg]"``; version 2.3 or later runs
without compiled extensions).

Field names follow PyG's conventions where PyG has one:

- ``x``: ``[N, 21 + F_n]`` float, the residue type one-hot (:data:`~protsteps.graph.ALPHABET`
  order, ``X`` last) followed by the featurizer's ``node_attr``;
- ``pos``: ``[N, 3]`` CA coordinates; ``edge_index``: ``[2, E]``, row 0 the source (sender),
  row 1 the target, which is PyG's ``source_to_target`` flow; ``edge_attr``: ``[E, F_e]``;
- every other :class:`~protsteps.ProteinGraph` field under its own name (``residue_type``,
  ``backbone``, ``dihedrals``, ``edge_distance``, ...), and ``sequence``, ``chain_id``,
  ``source`` as strings (lists of strings in a PyG ``Batch``).

:func:`from_pyg` reads those names back. From a ``Data`` made elsewhere it needs only
``pos`` and ``edge_index`` plus ``residue_type`` or ``sequence``; what is missing is
derived (edge distances and directions from ``pos``) or marked unobserved (backbone atoms
other than CA, dihedral angles), and the result is validated like any graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .errors import ProtstepsError
from .graph import _EDGE_FIELDS, _NODE_FIELDS, ALPHABET, Batch, ProteinGraph, residue_types

if TYPE_CHECKING:  # pragma: no cover
    import torch_geometric.data

__all__ = ["batch_to_pyg", "from_pyg", "to_pyg"]

_STRINGS = ("source", "chain_id", "sequence")


def _require_pyg() -> Any:
    try:
        import torch_geometric.data
    except ImportError:
        raise ProtstepsError(
            'PyTorch Geometric is not installed; pip install "protsteps[pyg]" (torch_geometric >= 2.3)'
        ) from None
    return torch_geometric.data


def _one_hot(residue_type: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.nn.functional.one_hot(residue_type, len(ALPHABET)).to(dtype)


def to_pyg(graph: ProteinGraph) -> torch_geometric.data.Data:
    """``graph`` as a ``torch_geometric.data.Data`` (tensors shared, not copied)."""
    data_module = _require_pyg()
    fields: dict[str, Any] = {name: getattr(graph, name) for name in (*_NODE_FIELDS, *_EDGE_FIELDS)}
    fields["x"] = torch.cat([_one_hot(graph.residue_type, graph.pos.dtype), graph.node_attr], dim=1)
    return data_module.Data(
        edge_index=graph.edge_index,
        num_nodes=graph.num_nodes,
        source=graph.source,
        chain_id=graph.chain_id,
        sequence=graph.sequence,
        **fields,
    )


def batch_to_pyg(batch: Batch) -> torch_geometric.data.Batch:
    """``batch`` as a ``torch_geometric.data.Batch``: ``batch.batch`` and ``ptr`` as PyG
    makes them, one ``Data`` per protein recoverable with ``to_data_list()``. The batch's
    ``dihedral_input_mask`` (what a task left the encoder to see) travels as a node field."""
    data_module = _require_pyg()
    items = []
    for index in range(batch.num_graphs):
        start, stop = int(batch.ptr[index]), int(batch.ptr[index + 1])
        edge_start, edge_stop = int(batch.edge_ptr[index]), int(batch.edge_ptr[index + 1])
        fields = {name: getattr(batch, name)[start:stop] for name in _NODE_FIELDS}
        fields.update({name: getattr(batch, name)[edge_start:edge_stop] for name in _EDGE_FIELDS})
        graph = ProteinGraph(
            source=batch.sources[index],
            chain_id=batch.chain_ids[index],
            sequence=batch.sequences[index],
            edge_index=batch.edge_index[:, edge_start:edge_stop] - start,
            **fields,
        )
        data = to_pyg(graph)
        data.dihedral_input_mask = batch.dihedral_input_mask[start:stop]
        items.append(data)
    return data_module.Batch.from_data_list(items)


def _string(data: Any, name: str, default: str) -> str:
    value = getattr(data, name, None)
    if value is None:
        return default
    if isinstance(value, (list, tuple)):
        raise ProtstepsError(
            f"from_pyg takes one graph; this Data holds {len(value)} values of {name!r} (a PyG Batch?): "
            "convert each of batch.to_data_list()"
        )
    return str(value)


def from_pyg(data: Any) -> ProteinGraph:
    """A :class:`~protsteps.ProteinGraph` from a ``torch_geometric.data.Data`` made by
    :func:`to_pyg`, or by another library (see the module docs for what it needs)."""
    _require_pyg()
    stored = getattr(data, "_store", data)
    keys = set(stored.keys()) if hasattr(stored, "keys") else set(vars(data))

    def get(name: str) -> Tensor | None:
        value = stored[name] if name in keys else None
        return value if isinstance(value, Tensor) else None

    pos, edge_index = get("pos"), get("edge_index")
    missing = [name for name, value in (("pos", pos), ("edge_index", edge_index)) if value is None]
    if missing:
        raise ProtstepsError(f"from_pyg: the Data lacks {' and '.join(missing)}; a residue graph needs both")
    assert pos is not None and edge_index is not None
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ProtstepsError(f"from_pyg: pos must be [N, 3] CA coordinates, got {tuple(pos.shape)}")
    n = pos.shape[0]
    sequence = _string(data, "sequence", "")
    residue_type = get("residue_type")
    if residue_type is None:
        if not sequence:
            raise ProtstepsError("from_pyg: the Data has neither residue_type nor sequence")
        residue_type = residue_types(sequence)
    if not sequence:
        sequence = "".join(ALPHABET[int(i)] for i in residue_type)
    float_type = pos.dtype
    edge_index = edge_index.long()
    source_pos, target_pos = pos[edge_index[0]], pos[edge_index[1]]
    offsets = target_pos - source_pos
    distance = offsets.norm(dim=-1)
    backbone = get("backbone")
    if backbone is None:
        backbone = torch.zeros(n, 4, 3, dtype=float_type)
        backbone[:, 1] = pos
    backbone_mask = get("backbone_mask")
    if backbone_mask is None:
        backbone_mask = torch.zeros(n, 4, dtype=torch.bool)
        backbone_mask[:, 1] = True
    filled: dict[str, Tensor | None] = {
        "residue_number": get("residue_number"),
        "dihedrals": get("dihedrals"),
        "dihedral_mask": get("dihedral_mask"),
        "node_attr": get("node_attr"),
        "edge_distance": get("edge_distance"),
        "edge_vector": get("edge_vector"),
        "edge_attr": get("edge_attr"),
    }
    defaults: dict[str, Tensor] = {
        "residue_number": torch.arange(1, n + 1, dtype=torch.long),
        "dihedrals": torch.zeros(n, 3, dtype=float_type),
        "dihedral_mask": torch.zeros(n, 3, dtype=torch.bool),
        "node_attr": torch.zeros(n, 0, dtype=float_type),
        "edge_distance": distance,
        "edge_vector": offsets / distance.clamp_min(1e-8).unsqueeze(-1),
        "edge_attr": torch.zeros(edge_index.shape[1], 0, dtype=float_type),
    }
    values = {name: value if value is not None else defaults[name] for name, value in filled.items()}
    try:
        return ProteinGraph(
            source=_string(data, "source", ""),
            chain_id=_string(data, "chain_id", ""),
            sequence=sequence,
            residue_type=residue_type.long(),
            pos=pos,
            backbone=backbone,
            backbone_mask=backbone_mask.bool(),
            edge_index=edge_index,
            **values,
        )
    except ValueError as exc:
        raise ProtstepsError(f"from_pyg: {exc}") from None
