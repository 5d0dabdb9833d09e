"""``protsteps cache``: what a cache folder holds, and migrating the per-file cache of
earlier versions (:mod:`protsteps.legacy_cache`) into the graph store."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from .._text import count
from ..errors import ConfigError, ProtstepsError
from ..structure._io import READERS
from ._app import THREADS_HELP, app, console, err_console
from ._featurize import parse_settings, run_featurize

if TYPE_CHECKING:
    from ..legacy_cache import LegacyEntry, LegacyFile

cache_app = typer.Typer(
    help="What a graph cache folder holds; migrate the per-file cache of earlier versions.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")

CacheDir = Annotated[
    Path | None,
    typer.Option(help="Graph cache folder, the --cache-dir of protsteps featurize"),
]

#: the folder under the cache folder where ``migrate`` writes its lists and report
MIGRATE_FOLDER = "legacy-migrate"
#: what ``migrate`` remembers of the legacy entries it read, so that a second run reads none
_MEMO = "entries.json"
_MEMO_VERSION = 1


def store_summary(root: Path) -> dict[str, int] | None:
    """What the graph store in ``root`` holds (records, chains, inputs that gave no chain,
    shards, bytes on disk), read from its index without changing anything; ``None`` when
    there is no store."""
    index = root / "index.sqlite"
    if not index.is_file():
        return None
    try:
        connection = sqlite3.connect(f"{index.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            rows = connection.execute("SELECT chains, shard FROM entries").fetchall()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise ProtstepsError(f"{index}: the cache index cannot be read ({exc})") from None
    chains = failed = 0
    shards = set()
    for chain_list, shard in rows:
        number = len(json.loads(chain_list))
        chains += number
        failed += number == 0
        shards.add(shard)
    size = 0
    for path in [index, *root.glob("index.sqlite-*"), *(root / "shards").glob("*")]:
        try:
            size += path.stat().st_size
        except OSError:
            continue
    return {"records": len(rows), "chains": chains, "failed": failed, "shards": len(shards), "bytes": size}


def _resolve(cache_dir: Path | None) -> Path:
    from ..featurize import default_cache_dir

    return cache_dir or default_cache_dir()


def _option(root: Path) -> str:
    """`` --cache-dir ROOT`` unless ``root`` is the default folder."""
    from ..featurize import default_cache_dir

    return "" if root == default_cache_dir() else f" --cache-dir {root}"


@cache_app.command("info")
def info(cache_dir: CacheDir = None) -> None:
    """What a cache folder holds: the graph store and any per-file entries of earlier versions.

    The store's records (one per featurized input), their chains, the inputs that gave no chain, its shards and its bytes on disk; then the per-file entries of earlier versions, which this version does not read (protsteps cache migrate).
    """
    from ..legacy_cache import format_bytes, scan_legacy

    root = _resolve(cache_dir)
    console.print(f"cache folder: {escape(str(root))}", highlight=False)
    if not root.is_dir():
        console.print("  nothing there yet (protsteps featurize creates it)", highlight=False)
        return
    store = store_summary(root)
    if store is None:
        console.print("  graph store: none yet (protsteps featurize creates it)", highlight=False)
    else:
        console.print(
            f"  graph store: {count(store['records'], 'record')} ({count(store['chains'], 'chain')}, "
            f"{count(store['failed'], 'input')} that failed), {count(store['shards'], 'shard')}, "
            f"{format_bytes(store['bytes'])} on disk",
            highlight=False,
        )
    legacy = scan_legacy(root)
    if not legacy.count:
        console.print("  per-file entries of earlier versions: none", highlight=False)
        return
    console.print(
        f"  per-file entries of earlier versions: {legacy.count} ({format_bytes(legacy.bytes)}), "
        "not used by this version (their keys fingerprint older code); "
        f"protsteps cache migrate{escape(_option(root))} featurizes their sources into the graph "
        "store, and with --remove-legacy deletes them afterwards",
        highlight=False,
    )


@cache_app.command("migrate")
def migrate(
    cache_dir: CacheDir = None,
    featurizer: Annotated[
        str, typer.Option(help="Registered featurizer (protsteps plugins), as for featurize.")
    ] = "residue_graph",
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Featurizer setting KEY=VALUE, repeatable, as for featurize."),
    ] = None,
    reader: Annotated[
        str, typer.Option(help=f"Structure reader: {' or '.join(READERS)} (the Bio.PDB reference).")
    ] = "columnar",
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    threads: Annotated[
        int,
        typer.Option(
            min=0, help=THREADS_HELP + " With --workers above 1, each worker process uses one thread."
        ),
    ] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help=f"Folder for the lists and report.json (default: CACHE_DIR/{MIGRATE_FOLDER}).",
        ),
    ] = None,
    remove_legacy: Annotated[
        bool,
        typer.Option(
            "--remove-legacy",
            help="Once their sources are in the graph store, delete the per-file entries (those whose "
            "source is missing and damaged ones too; their lists stay in --out).",
        ),
    ] = False,
) -> None:
    """Featurize the sources of the per-file cache entries of earlier versions into the graph store.

    Old entries are never reused as they are: their keys fingerprint the code that made them, and filing their graphs under today's keys would pass older code's output off as today's. Instead every entry is read (header, checksum, torch.load with weights_only), the sources that still exist are listed in OUT/sources.txt and featurized with today's code and the featurizer and settings given here (an old entry does not record them), as protsteps featurize would; missing sources (a relative path is taken from the current folder) go to OUT/missing.txt, damaged entries to OUT/damaged.txt. A second run reads no entry again and finds every source in the store.
    """
    from ..featurize import FeaturizerSpec
    from ..files import atomic_write_text, prepare_output_folder
    from ..legacy_cache import format_bytes, legacy_files, legacy_temporaries, source_exists

    if reader not in READERS:
        raise ConfigError(f"--reader: {reader!r} is not one of {', '.join(READERS)}")
    config = parse_settings(settings or [])
    FeaturizerSpec.create(featurizer, config)  # a wrong name or setting: refused before any work
    root = _resolve(cache_dir)
    files = list(legacy_files(root))
    leftovers = legacy_temporaries(root)
    if not files and not (remove_legacy and leftovers):
        console.print(
            f"no per-file entries of earlier versions in {escape(str(root))}; nothing to migrate",
            highlight=False,
        )
        return
    folder = prepare_output_folder(out or root / MIGRATE_FOLDER, "--out")
    entries = _read_entries(files, folder / _MEMO)
    total = sum(f.size for f in files)

    found: dict[str, None] = {}  # in order, each once
    gone: dict[str, None] = {}
    damaged: list[tuple[str, str]] = []
    for file, entry in zip(files, entries, strict=True):
        if entry.damaged:
            damaged.append((file.name, entry.damaged))
        elif entry.source not in found and entry.source not in gone:
            (found if source_exists(entry.source) else gone)[entry.source] = None
    sources = list(dict.fromkeys(_absolute(s) for s in found))
    missing = list(gone)
    atomic_write_text(
        folder / "sources.txt",
        f"# the sources of the per-file cache entries in {root} that exist (protsteps cache migrate)\n"
        + "".join(f"{s}\n" for s in sources),
    )
    atomic_write_text(
        folder / "missing.txt",
        "# sources of per-file cache entries that are not there (relative paths: from the folder "
        "migrate ran in)\n" + "".join(f"{s}\n" for s in missing),
    )
    atomic_write_text(
        folder / "damaged.txt",
        "# per-file cache entries that cannot be read: entry<TAB>reason\n"
        + "".join(f"{name}\t{reason}\n" for name, reason in damaged),
    )

    console.print(
        f"{count(len(files), 'per-file cache entry', 'per-file cache entries')} "
        f"({format_bytes(total)}) in {escape(str(root))}: {count(len(sources), 'source')} to featurize, "
        f"{len(missing)} missing, {len(damaged)} damaged",
        highlight=False,
    )
    if sources:
        report, no_chain = run_featurize(
            sources,
            featurizer,
            config,
            cache=root,
            workers=workers,
            reader=reader,
            threads=threads,
            title="migrate",
        )
        report.write(folder / "report.json")
        new = report.files - report.cache_hits
        gave_none = f", {no_chain} gave no chain (reasons in" if no_chain else " (report:"
        console.print(
            f"graph store: {count(new, 'source')} featurized, {report.cache_hits} already there; "
            f"{count(len(report.ok), 'chain')}{gave_none} {escape(str(folder / 'report.json'))})",
            highlight=False,
        )
    if missing:
        err_console.print(
            f"sources of old entries not found: {len(missing)} (first: {escape(missing[0])}; a "
            f"relative path is taken from the current folder); listed in {escape(str(folder / 'missing.txt'))}",
            highlight=False,
        )
    if damaged:
        err_console.print(
            f"{count(len(damaged), 'damaged entry', 'damaged entries')} (first: {escape(damaged[0][0])}: "
            f"{escape(damaged[0][1])}); listed in {escape(str(folder / 'damaged.txt'))}",
            highlight=False,
        )
    if not remove_legacy:
        console.print(
            f"the per-file entries stay; protsteps cache migrate{escape(_option(root))} --remove-legacy "
            "deletes them",
            highlight=False,
        )
        return
    removed, freed = _remove(files, leftovers)
    console.print(
        f"removed {count(removed, 'per-file cache entry', 'per-file cache entries')} ({format_bytes(freed)})",
        highlight=False,
    )


def _absolute(source: str) -> str:
    """``source`` with its file (or container) as an absolute path."""
    from ..sources import SEPARATOR, split_member

    container, member = split_member(source)
    path = os.path.abspath(container)
    return path if member is None else f"{path}{SEPARATOR}{member}"


def _read_entries(files: list[LegacyFile], memo_path: Path) -> list[LegacyEntry]:
    """Each file's entry: from the memo of an earlier run when the file's size and
    modification time are unchanged, else read (with a progress bar in a terminal); the
    memo is rewritten with what was read."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..files import atomic_write_text
    from ..legacy_cache import LegacyEntry, read_legacy

    memo: dict[str, Any] = {}
    try:
        loaded = json.loads(memo_path.read_text())
        if isinstance(loaded, dict) and loaded.get("version") == _MEMO_VERSION:
            memo = loaded.get("entries") or {}
    except (OSError, ValueError):
        memo = {}
    entries: list[LegacyEntry] = []
    fresh: dict[str, Any] = {}
    todo = [f for f in files if not _remembered(memo.get(f.name), f)]
    progress = Progress(
        TextColumn("[bold]read old entries"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal or not todo,
    )
    with progress:
        task = progress.add_task("read", total=len(todo))
        for file in files:
            known: Any = memo.get(file.name)
            if _remembered(known, file):
                entry = LegacyEntry(
                    file.path,
                    file.size,
                    format=known["format"],
                    source=known["source"],
                    chains=[(str(c[0]), int(c[1])) for c in known["chains"]],
                    errors=list(known["errors"]),
                    damaged=known["damaged"],
                )
            else:
                entry = read_legacy(file.path)
                progress.advance(task)
            entries.append(entry)
            fresh[file.name] = {
                "size": file.size,
                "mtime_ns": file.mtime_ns,
                "format": entry.format,
                "source": entry.source,
                "chains": [list(c) for c in entry.chains],
                "errors": entry.errors,
                "damaged": entry.damaged,
            }
    if todo or set(fresh) != set(memo):
        atomic_write_text(memo_path, json.dumps({"version": _MEMO_VERSION, "entries": fresh}) + "\n")
    return entries


def _remembered(known: Any, file: LegacyFile) -> bool:
    return (
        isinstance(known, dict)
        and known.get("size") == file.size
        and known.get("mtime_ns") == file.mtime_ns
        and {"format", "source", "chains", "errors", "damaged"} <= set(known)
    )


def _remove(files: list[LegacyFile], leftovers: list[Path]) -> tuple[int, int]:
    """Delete the legacy entries (those unchanged since they were listed), the temporary
    files of interrupted writes, and the two-hex-digit folders they leave empty. Returns
    the entries removed and their bytes."""
    removed = freed = 0
    folders = set()
    for file in files:
        try:
            stat = file.path.stat()
            if (stat.st_size, stat.st_mtime_ns) != (file.size, file.mtime_ns):
                continue  # rewritten since it was read: not what was migrated
            file.path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
        freed += file.size
        folders.add(file.path.parent)
    for path in leftovers:
        path.unlink(missing_ok=True)
        folders.add(path.parent)
    for folder in sorted(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty: something else lives there
            continue
    return removed, freed
