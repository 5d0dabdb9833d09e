"""A CLI command: ``protsteps sequences FILE...`` prints the chains' sequences as FASTA."""

from __future__ import annotations

from typing import Annotated

import typer

import protsteps
from protsteps.errors import ProtstepsError

sequences_app = typer.Typer(add_completion=False)


@sequences_app.command()
def sequences(
    files: Annotated[list[str], typer.Argument(help="Structure files (path:CHAIN selects chains).")],
    min_length: Annotated[int, typer.Option(min=0, help="Leave out chains with fewer residues.")] = 0,
) -> None:
    """Print each chain's residue sequence (the residues protsteps featurizes) as FASTA."""
    for file in files:
        try:
            graphs = protsteps.featurize(file)
        except ProtstepsError:
            raise
        except Exception as exc:  # a file the featurizer cannot read: one line, not a traceback
            raise ProtstepsError(f"{file}: {type(exc).__name__}: {exc}") from exc
        for graph in graphs:
            if len(graph.sequence) >= min_length:
                typer.echo(f">{graph.source}:{graph.chain_id} length={len(graph.sequence)}\n{graph.sequence}")
