"""Small real protein structures shipped with protsteps, for the demo run, the docs and
quick experiments.

>>> from protsteps import examples
>>> paths = examples.structures()
>>> len(paths)
8
>>> sorted({p.name.split(".", 1)[1] for p in paths})
['cif', 'cif.gz', 'pdb', 'pdb.gz']

===================  ============================================  =====================
file                 what                                          from
===================  ============================================  =====================
1A2K_AB.pdb.gz       NTF2 homodimer, two chains                    MaSIF (Apache-2.0)
1A8O.cif             HIV capsid C-terminal domain, MSE residues     Biopython tests
1GHQ_l_u.pdb         one chain, uncompressed PDB                   Docking Benchmark 5.5
1LCD.pdb.gz          lac repressor headpiece with DNA (left out)   Biopython tests
1PXV_C.pdb.gz        one chain of a protein complex                MaSIF (Apache-2.0)
1y1lA.pdb.gz         single-domain protein                         MDAnalysis tests
4CUP.cif.gz          single chain, mmCIF                           Biopython tests
5PTI.cif.gz          bovine pancreatic trypsin inhibitor           MDAnalysis tests
===================  ============================================  =====================

The coordinates are PDB entries (CC0); ``structures/SOURCES.md`` lists where each file
was taken from.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..structure import is_structure_path

__all__ = ["structures", "structures_dir"]


def structures_dir() -> Path:
    """The folder holding the example structures."""
    return Path(str(resources.files(__name__) / "structures"))


def structures() -> list[Path]:
    """Paths of the bundled example structures, sorted by name (PDB and mmCIF, plain and
    gzipped; 8 files, 9 protein chains)."""
    return sorted(p for p in structures_dir().iterdir() if p.is_file() and is_structure_path(p))
