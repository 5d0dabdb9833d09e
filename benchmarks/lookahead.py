"""Does STEPS' look-ahead change the student's update where it operates?

The pseudo bi-level scheme steps the student on the hypergradient
:math:`dL_{pre}(\\phi, \\theta'(\\phi))/d\\phi` with :math:`\\theta' = \\theta - \\alpha
\\nabla_\\theta L_{MI}`. For each inner rate :math:`\\alpha` this script trains a short run with
``scheme.diagnostics = true`` (measured every step, before the step's update) and reports:

- ``second-order``: the norm of the second-order term over the norm of the full
  hypergradient (0: the look-ahead's dependence on the student adds nothing);
- ``cos(joint)``: the cosine between the hypergradient and the gradient joint training with
  the teacher at :math:`\\theta` would take on the same batch (1: the same direction);
- ``tail shift``: :math:`\\lVert\\theta' - \\theta\\rVert / \\lVert\\theta\\rVert`;
- ``L_MI``: the bound's value at the step (how saturated the critic is).

Settings: ``default`` (protsteps' defaults: GIN with GELU and layer norm, sampled distance
pairs, batches of 4 proteins, in-batch negatives), ``paper`` (the ``paper`` preset: the
released code's linear GIN, all pairs, batch size 1 paired with the previous protein, the
released critic) and ``paper, our critic`` (the same with protsteps' critic), all with an ESM-2 teacher of the ``esm2_t6_8M_UR50D`` and ``esm2_t12_35M_UR50D``
architectures. **The ESM-2 weights are random** (no weights can be downloaded here):
the numbers say how the machinery behaves at these scales, not what trained ESM-2 weights
would give. Alpha is held constant (``anneal_inner_lr = false``) so that each row is one
alpha; the paper's operating point is 1e-3 x 0.1 = 1e-4.

Results go to ``--out`` one JSON file per row as each finishes; a second run with the same
``--out`` reuses them (the run can be stopped and resumed), then prints the table.

    python benchmarks/lookahead.py --out runs/lookahead
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from _workload import DEFAULT_STRUCTURES, composed_for_training, real_chains

import protsteps
from protsteps.files import atomic_write_text
from protsteps.registry import default_catalog
from protsteps.runconfig import load_run_config
from protsteps_esm.testing import write_esm2_checkpoint

ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1)
#: name -> (layers, embedding width, attention heads) of the released ESM-2 models
ARCHITECTURES = {"esm2_t6_8M": (6, 320, 20), "esm2_t12_35M": (12, 480, 20)}
#: setting -> (preset, proteins per batch, settings on top)
SETTINGS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "default": ("default", 4, ()),
    "paper": ("paper", 1, ()),
    # the paper setting with protsteps' critic: is the critic what silences the second-order term?
    "paper, our critic": (
        "paper",
        1,
        ('scheme.critic_projection="residual_mlp"', "scheme.critic_dim=128", "scheme.critic_lr=1e-3"),
    ),
}
KEYS = ("lookahead/second_order", "lookahead/cosine_joint", "lookahead/tail_shift")


def build(setting: str, weights: Path, alpha: float, total_steps: int):
    catalog = default_catalog()
    preset, _, extra = SETTINGS[setting]
    config = load_run_config(
        None,
        catalog,
        preset=preset,
        components={"teacher": "esm", "scheme": "pseudo_bilevel"},
        sets=[
            f'teacher.weights="{weights}"',
            f"scheme.inner_lr={alpha}",
            "scheme.anneal_inner_lr=false",
            "scheme.diagnostics=true",
            "train.log_every=1",
            *extra,
        ],
    )
    return composed_for_training(config, catalog, total_steps, one_epoch=True)


def measure(setting: str, weights: Path, alpha: float, graphs, steps: int) -> dict[str, object]:
    size = SETTINGS[setting][1]
    batches = [protsteps.collate(graphs[i : i + size]) for i in range(0, len(graphs), size)][:steps]
    composition = build(setting, weights, alpha, len(batches))
    values: dict[str, list[float]] = {k: [] for k in KEYS}
    mi: list[float] = []
    for index, batch in enumerate(batches):
        logged = composition.scheme.step(batch, torch.Generator().manual_seed(index))
        for key in KEYS:
            if key in logged:
                values[key].append(logged[key])
        if "mi" in logged:
            mi.append(logged["mi"])
    return {
        "steps": len(batches),
        "measured": len(values[KEYS[0]]),
        **{key: values[key] for key in KEYS},
        "mi": mi,
    }


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2e} [{min(values):.1e}, {max(values):.1e}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for per-row results (resumable)")
    parser.add_argument("--structures", type=Path, default=DEFAULT_STRUCTURES)
    parser.add_argument("--steps", type=int, default=12, help="training steps per row")
    parser.add_argument("--min-length", type=int, default=50)
    parser.add_argument("--max-length", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument(
        "--weights",
        nargs="+",
        type=Path,
        default=[],
        help="real ESM-2 checkpoint files to measure instead of random --models (named by file stem)",
    )
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    proteins = args.steps * max(SETTINGS[s][1] for s in args.settings)
    graphs = real_chains(args.structures, proteins, args.min_length, args.max_length, distinct=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        teachers = [(path.stem, path) for path in args.weights]
        for model in [] if args.weights else args.models:
            layers, dim, heads = ARCHITECTURES[model]
            path = Path(tmp) / f"{model}_random.pt"
            teachers.append(
                (model, write_esm2_checkpoint(path, num_layers=layers, embed_dim=dim, attention_heads=heads))
            )
        for model, weights in teachers:
            for setting in args.settings:
                for alpha in ALPHAS:
                    slug = setting.replace(", ", "-").replace(" ", "_")
                    path = args.out / f"{model}-{slug}-{alpha:g}.json"
                    if path.exists():
                        result = json.loads(path.read_text())
                    else:
                        result = measure(setting, weights, alpha, graphs, args.steps)
                        atomic_write_text(path, json.dumps(result))
                    print(f"done: {model} {setting} alpha={alpha:g}", flush=True)
                    rows.append((model, setting, alpha, result))

    print()
    print(
        f"{len(graphs)} real chains of {args.min_length}-{args.max_length} residues; "
        f"ESM-2 weights {'from ' + ', '.join(map(str, args.weights)) if args.weights else 'random'}; "
        f"{args.steps} steps per row, measured before each step's update; median [min, max] over the "
        f"measured steps; torch {torch.__version__}, {args.threads} thread(s)"
    )
    print()
    print(
        "| teacher | setting | alpha | measured steps | second-order / full | cos(bi-level, joint) "
        "| tail shift | L_MI |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model, setting, alpha, result in rows:
        print(
            f"| {model} | {setting} | {alpha:g} | {result['measured']}/{result['steps']} "
            f"| {summary(result[KEYS[0]])} | {summary(result[KEYS[1]])} | {summary(result[KEYS[2]])} "
            f"| {summary(result['mi'])} |"
        )


if __name__ == "__main__":
    main()
