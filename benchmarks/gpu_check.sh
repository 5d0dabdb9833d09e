#!/usr/bin/env bash
# Check and time protsteps on a machine with a CUDA GPU, in a few minutes:
#
#   pretrain, joint and pseudo bi-level, in float32, bfloat16 and float16 ([train] precision)
#   finetune (full mode) from the joint run, float32 and bfloat16
#   embed to .npz (and to .h5 when h5py is installed)
#   pretrain under torchrun with 2 processes and nccl (needs 2 GPUs; 1 GPU: the row says so)
#
# on the bundled example structures (core/protsteps/examples/structures), with a random ESM-2
# teacher of the esm2_t6_8M architecture (6 layers, width 320) written to a local file for the
# bi-level rows. Every run's losses must be finite and its checkpoint float32. Prints one
# Markdown table (for docs/benchmarks.md); exits non-zero when any case fails.
#
#   bash benchmarks/gpu_check.sh                  # from the project root, venv active
#   GPU_CHECK_EPOCHS=40 bash benchmarks/gpu_check.sh
#   bash benchmarks/gpu_check.sh --rehearse-on-cpu   # the same cases on the CPU (no fp16, no nccl)
#
# Runs go to a temporary folder, removed at the end (GPU_CHECK_KEEP=1 keeps it and says where).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
examples="$root/core/protsteps/examples/structures"
epochs="${GPU_CHECK_EPOCHS:-20}"
case_timeout="${GPU_CHECK_CASE_TIMEOUT:-240}"
python="${PYTHON:-python}"

device=cuda
if [[ "${1:-}" == "--rehearse-on-cpu" ]]; then
    device=cpu
    epochs="${GPU_CHECK_EPOCHS:-2}"
elif [[ $# -gt 0 ]]; then
    echo "gpu_check.sh: unknown argument '$1'; the only option is --rehearse-on-cpu" >&2
    exit 2
fi

if ! command -v "$python" >/dev/null 2>&1 || ! command -v protsteps >/dev/null 2>&1; then
    echo "gpu_check.sh: protsteps is not on PATH; activate the project's environment (. .venv/bin/activate)" >&2
    exit 2
fi
if [[ "$device" == cuda ]]; then
    gpus="$("$python" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')"
    if [[ "$gpus" == 0 ]]; then
        echo "gpu_check.sh: no CUDA device is visible to torch (torch.cuda.is_available() is False); run it on a machine with an NVIDIA GPU and a CUDA build of torch" >&2
        exit 2
    fi
else
    gpus=0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/protsteps-gpu-check.XXXXXX")"
if [[ "${GPU_CHECK_KEEP:-0}" == 1 ]]; then
    trap 'echo "runs kept in $work" >&2' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi
cache="$work/cache"
rows=()
failures=0

now() { date +%s.%N; }
seconds() { "$python" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }

# summary RUN: "steps | residues/s | last train loss" of a pretrain run, after checking that
# every logged loss is finite and every tensor of its last checkpoint is float32
summary() {
    "$python" - "$1" <<'EOF'
import json, math, statistics, sys
from pathlib import Path

import torch

run = Path(sys.argv[1])
records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
train = [r for r in records if r.get("split") == "train"]
if not train:
    sys.exit(f"{run}: no training records in metrics.jsonl")
bad = [r["step"] for r in train if not isinstance(r.get("loss"), float) or not math.isfinite(r["loss"])]
if bad:
    sys.exit(f"{run}: non-finite loss at steps {bad[:5]}")
record = torch.load(run / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")

def tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors(item)

dtypes = {str(t.dtype) for t in tensors([record["model"], record["scheme"]]) if t.is_floating_point()}
if dtypes != {"torch.float32"}:
    sys.exit(f"{run}: checkpoint tensors are {sorted(dtypes)}, expected float32 only")
rate = statistics.median(r["residues_per_second"] for r in train)
print(f"{record['step']} | {rate:,.0f} | {train[-1]['loss']:.4f}")
EOF
}

# case NAME PRECISION COMMAND...: run COMMAND, time it, and add a row (SUMMARY is set by the caller
# after a successful run; a failure adds a row saying so and its last log lines go to stderr)
case_row() {
    local name="$1" precision="$2"
    shift 2
    local log="$work/$(echo "$name-$precision" | tr ' /' '__').log"
    local start end
    start="$(now)"
    if timeout "$case_timeout" "$@" >"$log" 2>&1; then
        end="$(now)"
        wall="$(seconds "$start" "$end")"
        return 0
    fi
    end="$(now)"
    wall="$(seconds "$start" "$end")"
    echo "--- $name ($precision) failed; the end of its log:" >&2
    tail -n 15 "$log" >&2
    rows+=("| $name | $precision | $wall | - | - | - | FAILED |")
    failures=$((failures + 1))
    return 1
}

skip_row() {
    rows+=("| $1 | $2 | - | - | - | - | skipped: $3 |")
}

teacher="$work/esm2_t6_random.pt"
"$python" -c "
import sys
from protsteps_esm.testing import write_esm2_checkpoint
write_esm2_checkpoint(sys.argv[1], num_layers=6, embed_dim=320, attention_heads=20)
" "$teacher"
# featurize once, so that no timed row pays for parsing
if ! protsteps featurize "$examples" --out "$work/featurize" --cache-dir "$cache" >"$work/featurize.log" 2>&1; then
    echo "gpu_check.sh: featurizing the bundled examples failed; the end of its log:" >&2
    tail -n 15 "$work/featurize.log" >&2
    exit 1
fi

common=(--cache-dir "$cache" --epochs "$epochs" --batch-size 4 --device "$device" -q)
esm=(--teacher esm --set "teacher.weights=\"$teacher\"")

for scheme in joint pseudo_bilevel; do
    for precision in 32 bf16 16; do
        name="pretrain $scheme"
        if [[ "$precision" == 16 && "$device" != cuda ]]; then
            skip_row "$name" "$precision" "float16 needs CUDA"
            continue
        fi
        if [[ "$scheme" == joint ]]; then teacher_args=(--teacher none); else teacher_args=("${esm[@]}"); fi
        run="$work/pretrain-$scheme-$precision"
        if case_row "$name" "$precision" protsteps pretrain "$examples" --out "$run" --scheme "$scheme" \
            "${teacher_args[@]}" "${common[@]}" --set "train.precision=\"$precision\""; then
            if result="$(summary "$run" 2>&1)"; then
                rows+=("| $name | $precision | $wall | $result | ok |")
            else
                echo "--- $name ($precision): $result" >&2
                rows+=("| $name | $precision | $wall | - | - | - | FAILED: $result |")
                failures=$((failures + 1))
            fi
        fi
    done
done

# a manifest of the example chains, two classes, fixed splits
"$python" - "$examples" "$work/labels.tsv" <<'EOF'
import sys
from pathlib import Path

import protsteps

rows = []
for path in sorted(Path(sys.argv[1]).iterdir()):
    if path.suffix == ".md":
        continue
    rows += [(str(path), graph.chain_id) for graph in protsteps.featurize(path)]
splits = ["train"] * (len(rows) - 4) + ["valid", "valid", "test", "test"]
with open(sys.argv[2], "w") as fh:
    fh.write("path\tchain\tlabel\tsplit\n")
    for i, ((path, chain), split) in enumerate(zip(rows, splits)):
        fh.write(f"{path}\t{chain}\t{'ab'[i % 2]}\t{split}\n")
EOF

backbone="$work/pretrain-joint-32"
for precision in 32 bf16; do
    out="$work/finetune-$precision"
    if [[ ! -f "$backbone/encoder.pt" ]]; then
        skip_row "finetune (full)" "$precision" "the joint float32 pretrain failed"
        continue
    fi
    if case_row "finetune (full)" "$precision" protsteps finetune "$work/labels.tsv" --from "$backbone" \
        --out "$out" --mode full --epochs "$epochs" --batch-size 4 --device "$device" \
        --precision "$precision" --cache-dir "$cache" -q; then
        if detail="$("$python" - "$out/metrics.json" 2>&1 <<'EOF'
import json, math, sys

metrics = json.load(open(sys.argv[1]))
losses = [h["train_loss"] for h in metrics["history"]]
if not all(isinstance(x, float) and math.isfinite(x) for x in losses):
    sys.exit(f"non-finite training loss: {losses}")
print(f"{len(losses)} epochs | - | {losses[-1]:.4f}")
EOF
        )"; then
            rows+=("| finetune (full) | $precision | $wall | $detail | ok |")
        else
            echo "--- finetune ($precision): $detail" >&2
            rows+=("| finetune (full) | $precision | $wall | - | - | - | FAILED: $detail |")
            failures=$((failures + 1))
        fi
    fi
done

formats=(npz)
if "$python" -c "import h5py" 2>/dev/null; then formats+=(h5); fi
for suffix in "${formats[@]}"; do
    if [[ ! -f "$backbone/encoder.pt" ]]; then
        skip_row "embed .$suffix" 32 "the joint float32 pretrain failed"
        continue
    fi
    if case_row "embed .$suffix" 32 protsteps embed "$examples" --from "$backbone" --out "$work/e.$suffix" \
        --per-residue --device "$device" --cache-dir "$cache"; then
        chains="$(protsteps embeddings show "$work/e.$suffix" 2>/dev/null | head -n 1 | sed -E 's/.*: ([0-9]+) chains.*/\1/' || true)"
        rows+=("| embed .$suffix | 32 | $wall | ${chains:-?} chains | - | - | ok |")
    fi
done

name="pretrain joint, torchrun 2 x nccl"
if [[ "$device" != cuda ]]; then
    skip_row "$name" 32 "nccl needs CUDA"
elif ((gpus < 2)); then
    skip_row "$name" 32 "needs 2 GPUs, this machine has $gpus"
else
    run="$work/pretrain-ddp"
    if case_row "$name" 32 torchrun --standalone --nproc-per-node 2 -m protsteps pretrain "$examples" \
        --out "$run" --teacher none --scheme joint "${common[@]}"; then
        if result="$(summary "$run" 2>&1)"; then
            rows+=("| $name | 32 | $wall | $result | ok |")
        else
            rows+=("| $name | 32 | $wall | - | - | - | FAILED: $result |")
            failures=$((failures + 1))
        fi
    fi
fi

gpu_name="$("$python" -c "
import torch
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU (rehearsal)')
")"
echo
echo "protsteps $("$python" -c 'import protsteps; print(protsteps.__version__)'), torch $("$python" -c 'import torch; print(torch.__version__)'), $gpu_name, $epochs epochs of the bundled examples, batch 4"
echo
echo "| case | precision | wall (s) | steps | residues/s (median) | last train loss | result |"
echo "| --- | --- | ---: | ---: | ---: | ---: | --- |"
printf '%s\n' "${rows[@]}"
if ((failures > 0)); then
    echo "gpu_check.sh: $failures case(s) failed" >&2
    exit 1
fi
