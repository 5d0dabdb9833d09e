"""AlphaFold-DB scale on this machine: a large corpus featurized into the graph store, then
opened, loaded and resumed, against the per-file cache protsteps had before the store.

    python benchmarks/scale.py --workdir runs/scale                  # 100,000 chains
    python benchmarks/scale.py --workdir runs/scale-quick --chains 2000

The corpus is made cheaply from the shared structures: single-chain files replicated with
every CA coordinate perturbed (normal noise, 0.05 Å), so that every copy is a different
file and a different cache entry. Each stage's result is saved in ``WORKDIR/results.json``
as it finishes, so an interrupted run resumes at the first stage it has not finished
(``--redo STAGE`` runs one again). Timings are wall-clock seconds on this machine; CPU
seconds and the load average are printed beside them. The last step prints the table.

Stages:
  corpus      write the corpus (gzipped PDB files, 1,000 per folder)
  featurize1  featurize it, cold, one worker, into WORKDIR/store1
  featurize2  the same with two workers into WORKDIR/store2
  start       a second featurize over the corpus (what a pretrain start or resume does)
  open        build the GraphDataset of every chain: time and memory
  loader      DataLoader chains/s with 0 and 2 workers over a sample of chains
  resume      restore the sampler mid-epoch and reach the first batch
  perfile     the former cache (one torch.save file per input) on a sample: size, read rate,
              and the per-input torch.load a start used to make
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(
    os.environ.get("PROTSTEPS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
STAGES = ("corpus", "featurize1", "featurize2", "start", "open", "loader", "resume", "perfile")


# ---------------------------------------------------------------------------- corpus


def _bases(limit_residues: int = 400) -> list[tuple[list[str], list[int]]]:
    """Single-chain shared structures as (ATOM lines, indices of CA lines)."""
    bases = []
    for path in sorted((SHARED / "structures" / "masif").glob("*_?.pdb.gz")):
        lines = [
            line
            for line in gzip.decompress(path.read_bytes()).decode().splitlines()
            if line.startswith(("ATOM  ", "TER", "END"))
        ]
        ca = [i for i, line in enumerate(lines) if line.startswith("ATOM  ") and line[12:16] == " CA "]
        if 30 <= len(ca) <= limit_residues:
            bases.append((lines, ca))
    if not bases:
        raise SystemExit(f"no single-chain structures under {SHARED / 'structures' / 'masif'}")
    return bases


def make_corpus(folder: Path, chains: int, seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    bases = _bases()
    started = time.perf_counter()
    written = 0
    for index in range(chains):
        lines, ca = bases[index % len(bases)]
        copy = list(lines)
        for i in ca:
            line = copy[i]
            x, y, z = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
            x, y, z = x + rng.gauss(0, 0.05), y + rng.gauss(0, 0.05), z + rng.gauss(0, 0.05)
            copy[i] = f"{line[:30]}{x:8.3f}{y:8.3f}{z:8.3f}{line[54:]}"
        target = folder / f"d{index // 1000:04d}" / f"copy{index:07d}.pdb.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        data = gzip.compress(("\n".join(copy) + "\n").encode(), compresslevel=1)
        target.write_bytes(data)
        written += len(data)
        if index % 10000 == 9999:
            print(f"  corpus: {index + 1}/{chains}", flush=True)
    return {"seconds": time.perf_counter() - started, "bytes": written, "files": chains, "bases": len(bases)}


# ---------------------------------------------------------------------------- stages


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _in_child(stage: str, args: argparse.Namespace) -> dict[str, float]:
    """Run one stage in a fresh process, so that its memory and imports are its own."""
    command = [
        sys.executable,
        __file__,
        "--workdir",
        str(args.workdir),
        "--chains",
        str(args.chains),
        "--child",
        stage,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_featurize(workdir: Path, workers: int) -> dict[str, float]:
    from protsteps.featurize import featurize_many
    from protsteps.store import GraphStore

    store = workdir / f"store{workers}"
    shutil.rmtree(store, ignore_errors=True)
    cpu, wall = _cpu(), time.perf_counter()
    report = featurize_many([workdir / "corpus"], cache_dir=store, workers=workers)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    records, shards = GraphStore(store).counts()
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    residues = sum(int(r["residues"]) for r in report.ok)
    (workdir / "report.json").write_text(json.dumps(report.to_json()))
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "files": report.files,
        "chains": len(report.ok),
        "failed": len(report.failed),
        "records": records,
        "shards": shards,
        "store_bytes": size,
        "bytes_per_100_residues": size / residues * 100,
        "residues_per_chain": residues / max(len(report.ok), 1),
        "load": os.getloadavg()[0],
    }


def stage_start(workdir: Path) -> dict[str, float]:
    from protsteps.featurize import FeaturizerSpec, featurize_many

    FeaturizerSpec.create("residue_graph")  # plugins found and code fingerprinted: once per process
    cpu, wall = _cpu(), time.perf_counter()
    report = featurize_many([workdir / "corpus"], cache_dir=workdir / "store1")
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "hits": report.cache_hits,
        "files": report.files,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _dataset(workdir: Path):
    from protsteps.data import GraphDataset

    return GraphDataset.from_report(workdir / "report.json", cache_dir=workdir / "store1")


def stage_open(workdir: Path) -> dict[str, float]:
    import tracemalloc

    from protsteps.data import GraphDataset

    rows = json.loads((workdir / "report.json").read_text())["ok"]
    tracemalloc.start()
    wall = time.perf_counter()
    dataset = GraphDataset(rows, workdir / "store1")
    seconds = time.perf_counter() - wall
    held = tracemalloc.get_traced_memory()[0]
    return {"seconds": seconds, "chains": len(dataset), "bytes_per_chain": held / len(dataset)}


def stage_loader(workdir: Path, workers: int, sample: int) -> dict[str, float]:
    import torch

    import protsteps
    from protsteps.data import LengthBatchSampler
    from protsteps.graph import collate_packed

    dataset = _dataset(workdir)
    chosen = random.Random(0).sample(range(len(dataset)), min(sample, len(dataset)))
    subset = dataset.subset(chosen)
    sampler = LengthBatchSampler(subset.lengths, max_residues=4096, seed=0)
    # as training reads: with workers, each batch crosses as one packed buffer
    collate = collate_packed if workers else protsteps.collate
    loader = torch.utils.data.DataLoader(
        subset, batch_sampler=sampler, collate_fn=collate, num_workers=workers
    )
    wall, chains = time.perf_counter(), 0
    for batch in loader:
        if workers:
            batch = batch.unpack()
        chains += batch.num_graphs
    seconds = time.perf_counter() - wall
    return {"seconds": seconds, "chains": chains, "chains_per_second": chains / seconds}


def stage_resume(workdir: Path) -> dict[str, float]:
    import protsteps
    from protsteps.data import LengthBatchSampler

    wall = time.perf_counter()
    dataset = _dataset(workdir)
    sampler = LengthBatchSampler(dataset.lengths, max_residues=4096, seed=0)
    sampler.set_epoch(3)
    sampler.load_state_dict({"seed": 0, "epoch": 3, "position": len(sampler) // 2})
    first = next(iter(sampler))
    protsteps.collate([dataset[i] for i in first])
    return {"seconds": time.perf_counter() - wall, "batches_per_epoch": len(sampler)}


def stage_perfile(workdir: Path, sample: int) -> dict[str, float]:
    """The former cache: one torch.save file per input (a dict of ProteinGraph.to_dict()),
    read back with torch.load(weights_only=True), as protsteps did before the store."""
    import io

    import torch

    from protsteps.store import GraphStore

    rows = json.loads((workdir / "report.json").read_text())["ok"]
    chosen = random.Random(1).sample(rows, min(sample, len(rows)))
    store = GraphStore(workdir / "store1")
    folder = workdir / "perfile"
    shutil.rmtree(folder, ignore_errors=True)
    size = 0
    residues = 0
    for row in chosen:
        graph = store.load_graph(row["key"])
        buffer = io.BytesIO()
        torch.save(
            {
                "format": 2,
                "source": row["source"],
                "chains": [{"chain": graph.chain_id, "residues": graph.num_nodes, "graph": graph.to_dict()}],
                "errors": [],
            },
            buffer,
        )
        path = folder / row["key"][:2] / f"{row['key'].split(':')[0]}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
        size += len(buffer.getvalue())
        residues += graph.num_nodes
    files = sorted(folder.rglob("*.pt"))
    wall = time.perf_counter()
    for path in files:
        torch.load(path, map_location="cpu", weights_only=True)
    per_file_read = (time.perf_counter() - wall) / len(files)
    wall = time.perf_counter()
    for row in chosen:
        store.load_graph(row["key"])
    store_read = (time.perf_counter() - wall) / len(chosen)
    return {
        "files": len(files),
        "bytes_per_100_residues": size / residues * 100,
        "read_ms": per_file_read * 1000,
        "store_read_ms": store_read * 1000,
    }


def run_child(stage: str, args: argparse.Namespace) -> dict[str, float]:
    workdir = args.workdir
    if stage == "featurize1":
        return stage_featurize(workdir, 1)
    if stage == "featurize2":
        return stage_featurize(workdir, 2)
    if stage == "start":
        return stage_start(workdir)
    if stage == "open":
        return stage_open(workdir)
    if stage == "loader":
        sample = min(args.chains, 20000)
        return {f"workers{w}": stage_loader(workdir, w, sample) for w in (0, 2)}  # type: ignore[misc]
    if stage == "resume":
        return stage_resume(workdir)
    if stage == "perfile":
        return stage_perfile(workdir, min(args.chains, 5000))
    raise SystemExit(f"unknown stage {stage}")


# ---------------------------------------------------------------------------- table


def table(results: dict[str, dict], chains: int) -> str:
    f1, f2 = results.get("featurize1", {}), results.get("featurize2", {})
    lines = [
        f"chains: {chains:,}; load average at the end of featurize: {f1.get('load', float('nan')):.1f}",
        "",
    ]
    lines.append("| measure | graph store | per-file cache (before) | goal |")
    lines.append("|---|---:|---:|---:|")
    if f1:
        rate1 = f1["files"] / f1["seconds"]
        lines.append(
            f"| featurize, 1 worker | {rate1:,.0f} files/s ({f1['seconds']:,.0f} s, {f1['cpu_seconds']:,.0f} CPU-s) | | |"
        )
    if f1 and f2:
        rate2 = f2["files"] / f2["seconds"]
        lines.append(
            f"| featurize, 2 workers | {rate2:,.0f} files/s ({rate2 / rate1:.2f}x one worker) | | >= 1.7x |"
        )
    if f1:
        per = results.get("perfile", {})
        lines.append(
            f"| store size per 100-residue chain | {f1['bytes_per_100_residues'] / 1024:.1f} KB "
            f"({f1['store_bytes'] / 2**20:,.0f} MiB in {f1['shards']} shards) | "
            f"{per.get('bytes_per_100_residues', float('nan')) / 1024:.1f} KB | <= 15 KB |"
        )
    if "start" in results:
        s = results["start"]
        lines.append(
            f"| a start over the featurized corpus | {s['seconds']:.1f} s ({s['hits']:,} hits, no file read) | | |"
        )
    if "open" in results:
        o = results["open"]
        lines.append(
            f"| open the dataset | {o['seconds']:.2f} s, {o['bytes_per_chain']:.0f} B per chain | | < 2 s |"
        )
    if "loader" in results:
        for w in (0, 2):
            entry = results["loader"][f"workers{w}"]
            goal = ">= 5,000" if w == 2 else ""
            lines.append(
                f"| DataLoader, {w} workers | {entry['chains_per_second']:,.0f} chains/s | | {goal} |"
            )
    if "perfile" in results:
        p = results["perfile"]
        lines.append(f"| read one graph | {p['store_read_ms']:.2f} ms | {p['read_ms']:.2f} ms | |")
    if "resume" in results:
        r = results["resume"]
        lines.append(f"| resume mid-epoch to the first batch | {r['seconds']:.2f} s | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--chains", type=int, default=100_000)
    parser.add_argument("--redo", action="append", default=[], choices=STAGES)
    parser.add_argument("--only", action="append", default=[], choices=STAGES)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    if args.child:
        print(json.dumps(run_child(args.child, args)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if results.get("chains") not in (None, args.chains):
        raise SystemExit(f"{path} is for {results['chains']} chains; use another --workdir")
    results["chains"] = args.chains
    for stage in STAGES:
        if args.only and stage not in args.only:
            continue
        if stage in results and stage not in args.redo:
            continue
        print(f"stage {stage} ...", flush=True)
        if stage == "corpus":
            shutil.rmtree(args.workdir / "corpus", ignore_errors=True)
            results[stage] = make_corpus(args.workdir / "corpus", args.chains)
        else:
            results[stage] = _in_child(stage, args)
        path.write_text(json.dumps(results, indent=1))
        print(f"  {stage}: {json.dumps(results[stage])}", flush=True)
    print(table(results, args.chains))


if __name__ == "__main__":
    main()
