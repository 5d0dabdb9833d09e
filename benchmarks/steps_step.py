r"""STEPS' pretraining step as the authors' released code computes it, against protsteps'
``paper`` preset and its default settings, on the same chains with the same teacher file.

**The authors' formulation** (written here from the paper and ``docs/method.md``; the
released code is ``GGchen1997/STEPS_Bioinformatics``, ``main.py``/``utils.py``), one protein
per step:

1. the whole teacher runs on the sequence (its last transformer layer and final layer norm
   trainable, the rest frozen); node features
   :math:`x = [\mathrm{teacher}; \mathrm{rbf}(\phi/180); \mathrm{rbf}(\psi/180)]` (128
   Gaussians each, degrees), masked residues' angle features zeroed;
2. the linear GIN, two layers :math:`h^{\ell} = W_\ell(h^{\ell-1}_i + \sum_j w_{ij}
   h^{\ell-1}_j) + b_\ell`, :math:`w_{ij} = 1/(d_{ij}^2 + 10^{-6})`, as wide as its input
   (1,280 with a 1,024-wide teacher, as ProtBert is), the first layer reading a detached
   :math:`x`; :math:`s` = mean teacher row, :math:`g` = mean of :math:`h^2`;
3. the Jensen-Shannon bound of the released critic (two residual MLPs) on :math:`(s, g)`
   stacked with the previous protein's detached pair (the negatives), and an inner SGD step
   on the teacher's trainable part, :math:`\theta' = \theta - 10^{-4} \nabla_\theta L_{MI}`,
   with ``torch.autograd.grad(create_graph=True)`` and ``torch.func.functional_call`` (the
   released code used ``higher``);
4. the whole teacher again with :math:`\theta'`, the GIN, :math:`z = h^2 + x`; the distance
   head on **all** :math:`L^2` pairs, :math:`(z_i - z_j)^2` through
   :math:`d \to d/10 \to 30` bins, cross-entropy; the dihedral head (tanh) on
   :math:`\max(\lfloor 0.15 L\rfloor, 2)` masked residues, MSE against degrees/180; one Adam
   step of the student on the sum (which carries the second-order term through
   :math:`\theta'`);
5. every second protein, one Adam step of the critic on the last two proteins' detached
   :math:`(s, g)`.

The neighbour sum uses a sparse-matrix product, as DGL's ``GINConv`` does with its fused
kernel (no ``[E, d]`` message tensor), so the authors' side is not slowed by a slower
scatter than the one they ran. Their teacher is a bare encoder (transformers' ``BertModel``
of ProtBert), so fair-esm's language-model head is taken off here. What the released code
also does per step and this formulation leaves out, so that it costs less than the released
code: ``higher``'s copies of every teacher weight (``copy_initial_weights`` and the inner
optimiser's deep copy of its parameter groups, which hold the whole teacher), reading each
protein's ``.npy`` file, building its DGL graph, and tokenising the sequence twice.

**protsteps**: ``paper`` (the ``paper`` preset: batch size 1, all pairs, the same linear
1,280-wide GIN, the previous protein as negatives) and ``default`` (protsteps' defaults:
batches of 8, 256 sampled pairs per protein, GIN of width 256 with GELU and layer norm,
in-batch negatives), both with the ``esm`` teacher from the same file and the pseudo
bi-level scheme, each with the teacher's frozen-trunk cache on (the steady state after the
first epoch) and off.

**Teacher**: a random ESM-2 checkpoint written in fair-esm's format by
``protsteps_esm.testing.write_esm2_checkpoint`` (no real weights on this machine; speed does
not depend on the weights' values). Default: 6 layers (the depth of ``esm2_t6_8M_UR50D``),
width 1,024 (ProtBert's, so that the authors' GIN is the released 1,280-wide one), 16
heads; ``--dim 320 --heads 20`` gives the ``esm2_t6_8M_UR50D`` architecture itself, and
``--layers 30 --dim 1024 --heads 16`` the shape of the released code's own default teacher,
ProtBert (30 layers, 29 of them frozen).

**Measurement**: each configuration runs in a child process of its own per round (so that
its peak memory is its own): it sets the C allocator as ``protsteps pretrain`` does (freed
memory kept for reuse, :mod:`protsteps.allocator`; the authors' configuration too, so that
the ratio compares the steps, not allocators), builds the model, runs untimed warm-up steps
(with the cache on, one whole epoch, which fills the cache), then timed epochs over every chain, whole
epochs until ``--min-seconds`` of CPU time (default 10: one epoch of the authors' step, five
to ten of protsteps' defaults, whose single epoch of 1-2 s a moment's load on a shared
machine moves by a third). Reported: proteins per CPU-second of the child
(``time.process_time`` around the timed epochs), the child's peak resident memory
(``ru_maxrss``) and the timed epochs' own peak above what the process held before them (the
kernel's high-water mark ``VmHWM``, reset with
``/proc/self/clear_refs``). Rounds interleave the configurations (in a rotating order) so that
load from other work hits them alike; medians over rounds.

With ``--baseline REV``, protsteps' default configurations also run as the commit ``REV``
computes them (``git archive REV`` unpacked into a temporary folder, its ``core/`` and
``plugins/`` first on the child's ``PYTHONPATH``), in the same rotation: before/after on the
same chains, teacher file and load.

    python benchmarks/steps_step.py                 # 40 chains of 50-300 residues, 3 rounds
    python benchmarks/steps_step.py --baseline c5f1e7f --rounds 2 --proteins 20
    python benchmarks/steps_step.py --quick         # smoke run: 4 short chains, small teacher
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _workload import (
    answered_as_child,
    chains_parser,
    child_result,
    composed_for_training,
    keep_freed_memory_if_present,
    proc_status_bytes,
    real_chains,
    reset_peak_rss,
    unpack_revision,
)
from torch import Tensor, nn

import protsteps
from protsteps.graph import ProteinGraph
from protsteps.scatter import WeightedAdjacency
from protsteps_esm import load_esm2, normalize_sequence
from protsteps_esm.testing import write_esm2_checkpoint

#: name -> (preset, trunk cache); None: the authors' formulation in this file
CONFIGURATIONS: dict[str, tuple[str, bool] | None] = {
    "authors": None,
    "paper, cache off": ("paper", False),
    "paper, cache on": ("paper", True),
    "default, cache off": ("default", False),
    "default, cache on": ("default", True),
}
LEARNING_RATE = 1e-3  # the released pretraining rate (epoch 0 of its cosine schedule)
INNER_FACTOR = 0.1  # the inner SGD rate is LEARNING_RATE x 0.1
CRITIC_RATE = 0.1  # the released code sets the critic's Adam rate to 0.1 at each epoch start
ANGLE_CENTRES = 128


# ------------------------------------------------------------------ the authors' formulation


class ResidualProjection(nn.Module):
    """The released critic's projection: two linear layers with identity (zero-padded)
    shortcuts and ReLUs, ``in_dim -> out_dim``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.first = nn.Linear(in_dim, out_dim)
        self.second = nn.Linear(out_dim, out_dim)
        self.pad = out_dim - in_dim

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.first(x) + F.pad(x, (0, self.pad)))
        return torch.relu(self.second(h) + h)


class Critic(nn.Module):
    """:math:`T(s, g) = \\langle f_s(s), f_g(g)\\rangle` and the Jensen-Shannon bound over the
    rows: softplus(-T) on matched pairs, softplus(T) on every mismatched one."""

    def __init__(self, sequence_dim: int, structure_dim: int) -> None:
        super().__init__()
        self.sequence = ResidualProjection(sequence_dim, structure_dim)
        self.structure = ResidualProjection(structure_dim, structure_dim)

    def forward(self, s: Tensor, g: Tensor) -> Tensor:
        scores = self.sequence(s) @ self.structure(g).T
        matched = torch.eye(scores.shape[0], dtype=torch.bool)
        return F.softplus(-scores[matched]).mean() + F.softplus(scores[~matched]).mean()


class LinearGIN(nn.Module):
    """Two linear GIN layers as wide as their input and the two task heads."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, width)
        self.distance_head = nn.Sequential(
            nn.Linear(width, width // 10), nn.ReLU(), nn.Linear(width // 10, 30)
        )
        self.dihedral_head = nn.Sequential(
            nn.Linear(width, width // 10), nn.ReLU(), nn.Linear(width // 10, 2), nn.Tanh()
        )

    def message_passing(self, x: Tensor, adjacency: WeightedAdjacency) -> Tensor:
        h = self.first(x.detach() + adjacency @ x.detach())
        return self.second(h + adjacency @ h)


class AuthorsStep:
    """One protein per call of :meth:`step`, as described in the module docstring."""

    def __init__(self, weights: Path) -> None:
        loaded = load_esm2("esm2_t6_8M_UR50D", weights=weights, download=False)
        self.teacher = loaded.model.eval()
        # The released code's teacher is a bare encoder (transformers' BertModel: no language
        # model head); fair-esm's ESM2 runs its head on every token of every forward pass.
        self.teacher.lm_head = nn.Identity()
        self.converter = loaded.alphabet.get_batch_converter()
        self.last = self.teacher.num_layers
        tail = f"layers.{self.last - 1}."
        self.parameters = dict(self.teacher.named_parameters())
        self.trainable = [n for n in self.parameters if n.startswith((tail, "emb_layer_norm_after."))]
        for name, parameter in self.parameters.items():
            parameter.requires_grad_(name in self.trainable)
        teacher_dim = self.teacher.embed_dim
        width = teacher_dim + 2 * ANGLE_CENTRES
        self.student = LinearGIN(width)
        self.critic = Critic(teacher_dim, width)
        self.student_optimizer = torch.optim.Adam(self.student.parameters(), lr=LEARNING_RATE)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=CRITIC_RATE)
        self.centres = torch.linspace(-math.pi, math.pi, ANGLE_CENTRES)
        self.previous: tuple[Tensor, Tensor] | None = None
        self.seen: list[tuple[Tensor, Tensor]] = []

    def embed(self, tokens: Tensor, values: dict[str, Tensor]) -> Tensor:
        out = torch.func.functional_call(self.teacher, values, (tokens,), {"repr_layers": [self.last]})
        return out["representations"][self.last][0, 1:-1]

    def step(self, graph: ProteinGraph, generator: torch.Generator) -> float:
        length = graph.num_nodes
        _, _, tokens = self.converter([("protein", normalize_sequence(graph.sequence))])
        degrees = torch.where(graph.dihedral_mask[:, :2], torch.rad2deg(graph.dihedrals[:, :2]), 0.0).float()
        scaled = degrees / 180
        angles = torch.exp(-10 * (scaled[:, :, None] - self.centres).square()).reshape(length, -1)
        masked = torch.randperm(length, generator=generator)[: max(int(0.15 * length), 2)]
        angles[masked] = 0.0
        weight = 1.0 / (graph.edge_distance.float().square() + 1e-6)
        adjacency = WeightedAdjacency(graph.edge_index, weight, length, "sparse")

        # inner step: theta' = theta - alpha grad_theta L_MI, differentiable in the student
        sequence = self.embed(tokens, self.parameters)
        x = torch.cat([sequence, angles], dim=1)
        s = sequence.mean(0, keepdim=True)
        g = self.student.message_passing(x, adjacency).mean(0, keepdim=True)
        if self.previous is None:  # the very first protein has no negative: no look-ahead
            updated = self.parameters
        else:
            mutual = self.critic(torch.cat([s, self.previous[0]]), torch.cat([g, self.previous[1]]))
            tail = [self.parameters[n] for n in self.trainable]
            grads = torch.autograd.grad(mutual, tail, create_graph=True)
            alpha = LEARNING_RATE * INNER_FACTOR
            updated = {
                **self.parameters,
                **{n: p - alpha * d for n, p, d in zip(self.trainable, tail, grads, strict=True)},
            }
        self.previous = (s.detach(), g.detach())
        self.seen.append(self.previous)

        # outer step at theta': all L^2 pairs, masked angles; Adam on the full gradient
        x = torch.cat([self.embed(tokens, updated), angles], dim=1)
        z = self.student.message_passing(x, adjacency) + x
        pairs = (z[None, :, :] - z[:, None, :]).square().reshape(length * length, -1)
        bins = (
            (torch.cdist(graph.pos.float(), graph.pos.float()).clamp(0, 149) / 5).floor().long().reshape(-1)
        )
        distance_loss = F.cross_entropy(self.student.distance_head(pairs), bins)
        dihedral_loss = (self.student.dihedral_head(z[masked]) - scaled[masked]).square().mean()
        loss = distance_loss + dihedral_loss
        self.student_optimizer.zero_grad()
        loss.backward()
        self.student_optimizer.step()

        if len(self.seen) == 2:  # the critic, every second protein, on detached views
            critic_loss = self.critic(
                torch.cat([p[0] for p in self.seen]), torch.cat([p[1] for p in self.seen])
            )
            self.critic_optimizer.zero_grad()
            critic_loss.backward()
            self.critic_optimizer.step()
            self.seen = []
        return float(loss.detach())


# ------------------------------------------------------------------ protsteps


def protsteps_run(preset: str, cache: bool, weights: Path, total_steps: int):
    from protsteps.registry import default_catalog
    from protsteps.runconfig import load_run_config

    catalog = default_catalog()
    config = load_run_config(
        None,
        catalog,
        preset=preset,
        components={"teacher": "esm", "scheme": "pseudo_bilevel"},
        sets=[
            f'teacher.weights="{weights}"',
            "teacher.download=false",
            f"teacher.cache={str(cache).lower()}",
        ],
    )
    # one long epoch: the rates stay at their start
    return composed_for_training(config, catalog, total_steps, one_epoch=True), config.train.batch_size


# ------------------------------------------------------------------ one configuration, one process


def child(args: argparse.Namespace) -> dict[str, Any]:
    keep_freed_memory_if_present()  # every configuration, the authors' too
    torch.set_num_threads(1)
    graphs = real_chains(args.structures, args.proteins, args.min_length, args.max_length)
    spec = CONFIGURATIONS[args.child]
    if spec is None:
        authors = AuthorsStep(args.weights)
        warmup = [authors.step(graphs[i], torch.Generator().manual_seed(i)) for i in range(2)]

        def epoch(seed: int) -> None:
            for index, graph in enumerate(graphs):
                authors.step(graph, torch.Generator().manual_seed(seed * 1000 + index))

    else:
        preset, cache = spec
        composition, size = protsteps_run(preset, cache, args.weights, 1000)
        batches = [protsteps.collate(graphs[i : i + size]) for i in range(0, len(graphs), size)]

        def epoch(seed: int) -> None:
            for index, batch in enumerate(batches):
                composition.scheme.step(batch, torch.Generator().manual_seed(seed * 1000 + index))

        if cache:
            epoch(0)  # fills the trunk cache: the timed epoch is the steady state
        else:
            for index in range(min(2, len(batches))):
                composition.scheme.step(batches[index], torch.Generator().manual_seed(index))
        warmup = []
    del warmup
    reset_peak_rss()
    before = proc_status_bytes("VmRSS")
    # whole epochs until min_seconds of CPU have passed: a fast configuration's one epoch
    # (1-2 s) is at the mercy of a moment's load on a shared machine
    epochs = 0
    start = time.process_time()
    while epochs == 0 or time.process_time() - start < args.min_seconds:
        epochs += 1
        epoch(epochs)
    cpu = time.process_time() - start
    return {
        "proteins": len(graphs) * epochs,
        "chains": len(graphs),
        "epochs": epochs,
        "residues": sum(g.num_nodes for g in graphs),
        "cpu": cpu,
        "epoch_peak": proc_status_bytes("VmHWM") - before,
        "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


#: protsteps configurations that ``--baseline`` also runs at the baseline revision
BASELINE_CONFIGURATIONS = ("default, cache off", "default, cache on")


def run_child(
    name: str, args: argparse.Namespace, weights: Path, python_path: str | None = None
) -> dict[str, Any]:
    """One configuration in a child process; ``python_path``: run it with that code first on
    ``PYTHONPATH`` (a ``--baseline`` revision)."""
    env = dict(os.environ)
    if python_path is not None:
        env["PYTHONPATH"] = python_path
    command = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--weights",
        str(weights),
        "--structures",
        str(args.structures),
        "--proteins",
        str(args.proteins),
        "--min-length",
        str(args.min_length),
        "--max-length",
        str(args.max_length),
        "--min-seconds",
        str(args.min_seconds),
    ]
    return child_result(command, env, name)


def main(argv: list[str] | None = None) -> None:
    parser = chains_parser(__doc__, 40, "number of real chains", list(CONFIGURATIONS))
    parser.add_argument("--min-length", type=int, default=50)
    parser.add_argument("--max-length", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the configurations")
    parser.add_argument("--layers", type=int, default=6, help="teacher layers")
    parser.add_argument("--dim", type=int, default=1024, help="teacher width (ProtBert's: 1024)")
    parser.add_argument("--heads", type=int, default=16, help="teacher attention heads")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGURATIONS), default=list(CONFIGURATIONS))
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=10.0,
        help="timed epochs per configuration and round: whole epochs until this much CPU time",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 chains of 50-120, small teacher")
    parser.add_argument(
        "--baseline", help="a git revision: also run the default configurations as it computes them"
    )
    args = parser.parse_args(argv)
    if answered_as_child(args, child):
        return
    if args.quick:
        args.proteins, args.max_length, args.rounds = 4, 120, 1
        args.layers, args.dim, args.heads = 2, 64, 4
        args.min_seconds = 0.0

    names = list(args.only)
    #: a row's name -> (its configuration, the PYTHONPATH of its code or None for this tree)
    rows: dict[str, tuple[str, str | None]] = {name: (name, None) for name in names}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            python_path = unpack_revision(args.baseline, f"{tmp}/baseline")
            for name in BASELINE_CONFIGURATIONS:
                if name in names:
                    rows[f"{name} @ {args.baseline}"] = (name, python_path)
            names = list(rows)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        weights = write_esm2_checkpoint(
            Path(tmp) / f"esm2_t{args.layers}_{args.dim}_random.pt",
            num_layers=args.layers,
            embed_dim=args.dim,
            attention_heads=args.heads,
        )
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                loads.append(os.getloadavg()[0])
                configuration, python_path = rows[name]
                result = run_child(configuration, args, weights, python_path)
                results[name].append(result)
                print(
                    f"round {round_index + 1}: {name}: {result['proteins'] / result['cpu']:.3f} proteins "
                    f"per CPU-second, peak RSS {result['max_rss'] / 2**20:.0f} MiB",
                    file=sys.stderr,
                    flush=True,
                )

    first = results[names[0]][0]
    print(
        f"{first['chains']} real chains of {args.min_length}-{args.max_length} residues "
        f"({first['residues']} residues) from {args.structures}; teacher: random ESM-2 weights, "
        f"{args.layers} layers, width {args.dim}, {args.heads} heads (student width with the "
        f"paper's angle features: {args.dim + 2 * ANGLE_CENTRES}); {args.rounds} round(s), "
        f"median over rounds, each round whole epochs until {args.min_seconds:g} CPU-s; "
        f"torch {torch.__version__}, 1 thread; load average "
        f"{min(loads):.1f}-{max(loads):.1f}"
    )
    print()
    print(
        "| configuration | proteins per CPU-second | rounds | timed epochs per round | vs authors "
        "| peak RSS (MiB) | timed epochs' peak above their start (MiB) |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")

    def rate(result: dict[str, Any]) -> float:
        return result["proteins"] / result["cpu"]

    base = statistics.median(rate(r) for r in results["authors"]) if "authors" in results else None
    for name in names:
        rates = [rate(r) for r in results[name]]
        median = statistics.median(rates)
        ratio = f"{median / base:.1f}x" if base else "-"
        print(
            f"| {name} | {median:.2f} | {', '.join(f'{r:.2f}' for r in rates)} "
            f"| {', '.join(str(r['epochs']) for r in results[name])} | {ratio} "
            f"| {max(r['max_rss'] for r in results[name]) / 2**20:.0f} "
            f"| {max(r['epoch_peak'] for r in results[name]) / 2**20:.0f} |"
        )


if __name__ == "__main__":
    main()
