"""``protsteps featurize``: structure files -> cached residue graphs and a report."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from .._text import count
from ..config import parse_value
from ..errors import ConfigError, ProtstepsError
from ..progress import Ticker, format_duration
from ..structure._io import DEFAULT_MAX_BYTES, READERS
from ._app import THREADS_HELP, StructureInputs, app, console, err_console

if TYPE_CHECKING:
    from ..featurize import FeaturizeReport, FileResult


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` (or ``featurizer.k=v``) pairs as featurizer settings, values read as TOML."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        if key.startswith("featurizer."):
            key = key[len("featurizer.") :]
        settings[key] = parse_value(value.strip())
    return settings


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)``; anything else is a one-line error naming ``--shard``."""
    index, sep, count = text.partition("/")
    if sep and index.strip().isdigit() and count.strip().isdigit():
        pair = int(index), int(count)
        if pair[1] >= 1 and pair[0] < pair[1]:
            return pair
    raise ConfigError(f"--shard: expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")


@app.command()
def featurize(
    inputs: StructureInputs,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.json.")],
    featurizer: Annotated[
        str, typer.Option(help="Registered featurizer (protsteps plugins).")
    ] = "residue_graph",
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Featurizer setting KEY=VALUE, repeatable (e.g. --set radius=8)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Graph cache folder (default: $XDG_CACHE_HOME/protsteps/graphs, else ~/.cache/protsteps/graphs)."
        ),
    ] = None,
    reader: Annotated[
        str, typer.Option(help=f"Structure reader: {' or '.join(READERS)} (the Bio.PDB reference).")
    ] = "columnar",
    threads: Annotated[
        int,
        typer.Option(
            min=0, help=THREADS_HELP + " With --workers above 1, each worker process uses one thread."
        ),
    ] = 0,
    max_mib: Annotated[
        int,
        typer.Option(
            "--max-mib",
            min=1,
            help="Largest file, or gunzipped content, to read, in MiB; a larger one is a failed row "
            "(a gzip bomb costs at most this much memory).",
        ),
    ] = DEFAULT_MAX_BYTES >> 20,
    shard: Annotated[
        str,
        typer.Option(
            "--shard",
            help="I/N: featurize only share I (0..N-1) of the inputs, those whose name hashes to I "
            "modulo N (a SLURM array task: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); "
            "every share writes the same cache, so a later run over all inputs finds them all.",
        ),
    ] = "",
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="Featurize every input again and overwrite its cache entries, whatever is cached.",
        ),
    ] = False,
) -> None:
    """Featurize structures into the cache and write OUT/report.json.

    Every input ends up in the report: each usable chain as an "ok" row, each file (or chain) that could not be used as a "failed" row with the reason. Exits 0 when at least one chain was featurized, 1 otherwise. Outside a terminal (a log file), progress is a line every 30 seconds (PROTSTEPS_PROGRESS_SECONDS) and at the end.
    """
    from ..featurize import default_cache_dir
    from ..files import prepare_output_folder
    from ..legacy_cache import legacy_note

    if reader not in READERS:
        raise ConfigError(f"--reader: {reader!r} is not one of {', '.join(READERS)}")
    config = parse_settings(settings or [])
    cache = cache_dir or default_cache_dir()
    share = parse_shard(shard) if shard else None
    prepare_output_folder(out, "--out")
    if note := legacy_note(cache):
        err_console.print(note, highlight=False, markup=False, style="yellow")
    report, no_chain = run_featurize(
        inputs,
        featurizer,
        config,
        cache=cache,
        workers=workers,
        reader=reader,
        threads=threads,
        refresh=refresh,
        max_bytes=max_mib << 20,
        shard=share,
    )
    report_path = out / "report.json"
    try:
        report.write(report_path)
    except OSError as exc:
        raise ProtstepsError(f"{report_path}: cannot write the report ({exc.strerror or exc})") from None
    chains, files = len(report.ok), report.files
    failed_files = len({row["source"] for row in report.failed})
    if not report.ok:
        raise ProtstepsError(
            f"nothing could be featurized: {failed_files} of {count(files, 'input')} failed "
            f"(first: {report.failed[0]['error'] if report.failed else 'no inputs'}); reasons in {report_path}"
        )
    first = f" (first: {escape(report.failed[0]['error'])})" if report.failed else ""
    damaged = f", {report.cache_damaged} damaged cache entries rebuilt" if report.cache_damaged else ""
    console.print(
        f"{count(chains, 'chain')} from {count(files - no_chain, 'file')} "
        f"({report.cache_hits} from the cache{damaged}), {len(report.failed)} failed{first}; "
        f"report: {escape(str(report_path))}; cache: {escape(str(report.cache_dir))}",
        highlight=False,
    )


def run_featurize(
    inputs: list[str],
    featurizer: str,
    config: dict[str, Any],
    *,
    cache: Path,
    workers: int = 1,
    reader: str = "columnar",
    threads: int = 0,
    refresh: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    shard: tuple[int, int] | None = None,
    title: str = "featurize",
) -> tuple[FeaturizeReport, int]:
    """:func:`~protsteps.featurize.featurize_many` with the progress display of ``protsteps
    featurize`` (a bar in a terminal, else a line every interval), named ``title``. Returns
    the report and the number of inputs that gave no chain."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..featurize import featurize_many
    from ..threads import allow_interop, using_threads

    allow_interop()
    counts = {"ok": 0, "failed": 0}
    clock = {"started": time.perf_counter()}
    progress = Progress(
        TextColumn(f"[bold]{title}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/]"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    task = progress.add_task(title, total=None, ok=0, failed=0, rate="")
    # outside a terminal (a log file): plain lines, the first, one every interval, the last
    lines = None if err_console.is_terminal else Ticker()
    total_files = {"n": 0}

    def on_total(total: int) -> None:
        started = time.perf_counter()  # after plugin discovery: the rate is per structure
        clock["started"] = started
        total_files["n"] = total
        if lines is not None:
            lines.restart()
        progress.update(task, total=total)

    def on_result(result: FileResult) -> None:
        counts["ok" if result.ok else "failed"] += 1
        done = counts["ok"] + counts["failed"]
        rate = done / max(time.perf_counter() - clock["started"], 1e-9)
        if lines is None:
            progress.update(
                task, advance=1, ok=counts["ok"], failed=counts["failed"], rate=f"{rate:.1f} files/s"
            )
        elif lines.due(done, total_files["n"]):
            total = total_files["n"]
            eta = format_duration((total - done) / rate) if rate > 0 else "?"
            err_console.print(
                f"{title}: {done}/{total} files ({100 * done / max(total, 1):.0f}%), {counts['ok']} ok, "
                f"{counts['failed']} failed, {rate:.1f} files/s, ETA {eta}",
                highlight=False,
                markup=False,
            )

    with using_threads(threads, workers=workers - 1), progress if lines is None else nullcontext():
        report = featurize_many(
            inputs,
            featurizer,
            config,
            cache_dir=cache,
            workers=workers,
            reader=reader,  # type: ignore[arg-type]
            on_result=on_result,
            on_total=on_total,
            refresh=refresh,
            max_bytes=max_bytes,
            shard=shard,
        )
    return report, counts["failed"]
