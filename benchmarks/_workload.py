"""What ``teacher.py`` and ``schemes.py`` share: the real chains they run on, the model size
options, and a random-weight ESM-2 checkpoint of that size in fair-esm's file format (speed
does not depend on the weights' values)."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import protsteps
from protsteps.errors import StructureError
from protsteps_esm.testing import write_esm2_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STRUCTURES = ROOT.parent / "shared" / "data" / "structures" / "masif"


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """Options for the chains (folder, how many, length range, batch size) and the ESM-2
    architecture (defaults: ``esm2_t6_8M_UR50D``) and the torch thread count."""
    parser.add_argument(
        "--structures", type=Path, default=DEFAULT_STRUCTURES, help="folder of structure files"
    )
    parser.add_argument("--proteins", type=int, default=32, help="number of real chains")
    parser.add_argument("--min-length", type=int, default=50)
    parser.add_argument("--max-length", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--layers", type=int, default=6, help="ESM-2 layers")
    parser.add_argument("--dim", type=int, default=320, help="ESM-2 embedding width")
    parser.add_argument("--heads", type=int, default=20, help="ESM-2 attention heads")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")


def chains_parser(
    doc: str | None, proteins: int, proteins_help: str, children: Sequence[str] = ()
) -> argparse.ArgumentParser:
    """An argument parser with the module docs as its description and the chains' options:
    ``--structures`` (default the MaSIF folder) and ``--proteins``; with ``children``, also the
    hidden ``--child NAME`` and ``--weights FILE`` that a benchmark's child process is run with
    (see :func:`answered_as_child`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--structures", type=Path, default=DEFAULT_STRUCTURES, help="folder of structure files"
    )
    parser.add_argument("--proteins", type=int, default=proteins, help=proteins_help)
    if children:
        parser.add_argument("--child", choices=list(children), help=argparse.SUPPRESS)
        parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    return parser


def answered_as_child(args: argparse.Namespace, child: Callable[[argparse.Namespace], Any]) -> bool:
    """In a child process (``--child`` given): print ``child(args)`` as the JSON line that
    :func:`child_result` reads, and say so."""
    if not args.child:
        return False
    print(json.dumps(child(args)))
    return True


def keep_freed_memory_if_present() -> None:
    """Set the C allocator as ``protsteps pretrain`` does (freed memory kept for reuse,
    :mod:`protsteps.allocator`; ``PROTSTEPS_MALLOC=system`` turns it off), where the protsteps
    imported has it: a ``--baseline`` from before that module runs with glibc's own."""
    try:
        from protsteps.allocator import keep_freed_memory
    except ImportError:
        return
    keep_freed_memory()


def real_chains(
    folder: Path, count: int, min_length: int, max_length: int, distinct: bool = False
) -> list[protsteps.ProteinGraph]:
    """The first ``count`` chains (sorted file order) of ``min_length`` to ``max_length``
    residues under ``folder``, read through ``protsteps.featurize``; unreadable files are
    passed over. ``distinct``: each sequence once (the chains of a homodimer are one)."""
    chosen: list[protsteps.ProteinGraph] = []
    seen: set[str] = set()
    for path in sorted(
        p for p in folder.rglob("*") if p.is_file() and (".pdb" in p.name or ".cif" in p.name)
    ):
        try:
            graphs = protsteps.featurize(path)
        except StructureError:
            continue
        for g in graphs:
            if min_length <= g.num_nodes <= max_length and not (distinct and g.sequence in seen):
                seen.add(g.sequence)
                chosen.append(g)
        if len(chosen) >= count:
            return chosen[:count]
    if not chosen:
        raise SystemExit(f"no chain of {min_length}..{max_length} residues under {folder}")
    return chosen


def child_result(command: list[str], env: dict[str, str] | None, what: str) -> Any:
    """Run a benchmark's child process and return the JSON on its last line of output; a
    child that fails stops the benchmark with its error output, naming ``what``."""
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def unpack_revision(revision: str, folder: str) -> str:
    """``git archive revision`` of this repository unpacked into ``folder``; returns the
    ``PYTHONPATH`` of its ``core/`` and ``plugins/`` (for a ``--baseline`` child)."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", revision], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return f"{folder}/core{os.pathsep}{folder}/plugins"


def proc_status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``, ...) in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset the kernel's peak resident set size of this process (``VmHWM``) to its current
    size (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call. CPU time of this process is the steadier measure on a
    machine shared with other work; wall time is what a user waits."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def esm2_weights(directory: Path, args: argparse.Namespace) -> Path:
    """A random ESM-2 checkpoint of the architecture in ``args``, written under ``directory``."""
    return write_esm2_checkpoint(
        directory / f"esm2_t{args.layers}_random.pt",
        num_layers=args.layers,
        embed_dim=args.dim,
        attention_heads=args.heads,
    )


def composed_for_training(config, catalog, total_steps: int, *, one_epoch: bool = False):
    """``config`` composed (torch seeded with 0), its scheme set up on the CPU for
    ``total_steps`` and the model in training mode. ``one_epoch``: the steps are one long
    epoch (``epoch_starts = [0, total_steps]``), so per-epoch schedules stay at their start."""
    import torch

    from protsteps.model import compose
    from protsteps.optim import SchemeSetup

    torch.manual_seed(0)
    composition = compose(config, catalog)
    composition.scheme.setup(
        SchemeSetup(
            model=composition.model,
            train=config.train,
            total_steps=total_steps,
            device=torch.device("cpu"),
            epoch_starts=[0, total_steps] if one_epoch else (),
        )
    )
    composition.model.train()
    return composition
