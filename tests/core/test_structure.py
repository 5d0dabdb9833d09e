"""Reading structure files: rules, both readers, bad files, dihedrals vs Bio.PDB."""

from __future__ import annotations

import gzip
import io
import warnings
from pathlib import Path

import numpy as np
import pytest

from protsteps.errors import StructureError
from protsteps.structure import (
    READERS,
    backbone_dihedrals,
    dihedral,
    parent_letter,
    peptide_bonds,
    read_chains,
    split_selection,
)


def atom(serial, name, resname, chain, resseq, xyz, *, record="ATOM", altloc=" ", icode=" ", occupancy=1.0):
    """One fixed-column PDB ATOM/HETATM line."""
    fullname = f" {name:<3}" if len(name) < 4 else name
    x, y, z = xyz
    return (
        f"{record:<6}{serial:>5} {fullname}{altloc}{resname:>3} {chain}{resseq:>4}{icode}   "
        f"{x:>8.3f}{y:>8.3f}{z:>8.3f}{occupancy:>6.2f}{20.0:>6.2f}          {name[0]:>2}\n"
    )


def residue_lines(serial, resname, chain, resseq, origin, *, atoms=("N", "CA", "C", "O"), **kw):
    """Backbone atoms of one residue laid out along x from ``origin`` (a straight strand with
    3.8 Å between consecutive CA atoms and 1.33 Å peptide bonds)."""
    offsets = {
        "N": (0.0, 0.0, 0.0),
        "CA": (1.46, 0.4, 0.0),
        "C": (2.47, -0.3, 0.3),
        "O": (2.4, -1.5, 0.5),
        "CB": (1.5, 1.5, 1.0),
    }
    lines = ""
    for name in atoms:
        dx, dy, dz = offsets[name]
        lines += atom(serial, name, resname, chain, resseq, (origin + dx, dy, dz), **kw)
        serial += 1
    return lines, serial


def strand(chain="A", names=("ALA", "GLY", "SER", "LYS"), start=1, origin=0.0, serial=1, **kw):
    text = ""
    for i, name in enumerate(names):
        lines, serial = residue_lines(serial, name, chain, start + i, origin + 3.8 * i, **kw)
        text += lines
    return text, serial


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


# ---------------------------------------------------------------------------- rules


@pytest.mark.parametrize("reader", READERS)
def test_reads_chains_in_order_with_sequence(tmp_path, reader):
    a, serial = strand("A", ("MET", "LYS", "VAL"))
    b, _ = strand("B", ("GLY", "TRP"), serial=serial, origin=50.0)
    path = write(tmp_path, "two.pdb", a + "TER\n" + b + "END\n")
    chains = read_chains(path, reader=reader)
    assert [c.chain_id for c in chains] == ["A", "B"]
    assert [c.sequence for c in chains] == ["MKV", "GW"]
    assert chains[0].backbone.shape == (3, 4, 3) and chains[0].backbone.dtype == np.float32
    assert chains[0].backbone_mask.all()
    np.testing.assert_allclose(chains[1].ca[0], [51.46, 0.4, 0.0], atol=1e-3)
    assert chains[0].source == str(path)


@pytest.mark.parametrize("reader", READERS)
def test_modified_unknown_water_ligand_nucleotide(tmp_path, reader):
    text, serial = strand("A", ("ALA",))
    mse, serial = residue_lines(serial, "MSE", "A", 2, 3.8, record="HETATM")
    unknown, serial = residue_lines(serial, "ZZZ", "A", 3, 7.6, record="HETATM")
    unk, serial = residue_lines(serial, "UNK", "A", 4, 11.4)
    # a ligand with a CA-named atom but no N or C, a calcium ion, waters, a nucleotide
    ligand = atom(serial, "CA", "LIG", "A", 101, (30, 0, 0), record="HETATM")
    ion = atom(serial + 1, "CA", "CA", "A", 102, (33, 0, 0), record="HETATM")
    water, serial = residue_lines(serial + 2, "HOH", "A", 103, 40.0, record="HETATM")
    dna, _ = residue_lines(serial, "DA", "A", 104, 50.0, atoms=("N", "CA", "C"))
    path = write(tmp_path, "mixed.pdb", text + mse + unknown + unk + ligand + ion + water + dna)
    (chain,) = read_chains(path, reader=reader)
    assert chain.sequence == "AMXX"
    assert chain.residue_names.tolist() == ["ALA", "MSE", "ZZZ", "UNK"]


@pytest.mark.parametrize("reader", READERS)
def test_altloc_highest_occupancy_and_insertion_codes(tmp_path, reader):
    text, serial = strand("A", ("ALA",), start=52)
    # residue 52A with two alternate locations of CA; B has the higher occupancy
    lines, serial = residue_lines(serial, "GLY", "A", 52, 3.8, icode="A", atoms=("N", "C", "O"))
    lines += atom(serial, "CA", "GLY", "A", 52, (5.0, 0.0, 0.0), altloc="A", icode="A", occupancy=0.3)
    lines += atom(serial + 1, "CA", "GLY", "A", 52, (5.5, 0.0, 0.0), altloc="B", icode="A", occupancy=0.7)
    later, _ = residue_lines(serial + 2, "SER", "A", 53, 7.6)
    path = write(tmp_path, "alt.pdb", text + lines + later)
    (chain,) = read_chains(path, reader=reader)
    assert chain.residue_numbers.tolist() == [52, 52, 53]
    assert chain.insertion_codes.tolist() == ["", "A", ""]
    assert chain.ca[1, 0] == pytest.approx(5.5)


@pytest.mark.parametrize("reader", READERS)
def test_first_model_only(tmp_path, reader):
    one, _ = strand("A", ("ALA", "GLY"))
    two, _ = strand("A", ("ALA", "GLY"), origin=100.0)
    path = write(
        tmp_path, "nmr.pdb", "MODEL        1\n" + one + "ENDMDL\nMODEL        2\n" + two + "ENDMDL\nEND\n"
    )
    (chain,) = read_chains(path, reader=reader)
    assert len(chain) == 2 and chain.ca[0, 0] == pytest.approx(1.46)


@pytest.mark.parametrize("reader", READERS)
def test_residue_without_ca_skipped_missing_n_kept_and_masked(tmp_path, reader):
    first, serial = strand("A", ("ALA", "GLY"))
    no_ca, serial = residue_lines(serial, "SER", "A", 3, 7.6, atoms=("N", "C", "O", "CB"))
    no_n, serial = residue_lines(serial, "LYS", "A", 4, 11.4, atoms=("CA", "C", "O"))
    last, _ = residue_lines(serial, "VAL", "A", 5, 15.2)
    path = write(tmp_path, "holes.pdb", first + no_ca + no_n + last)
    (chain,) = read_chains(path, reader=reader)
    assert chain.sequence == "AGKV"
    assert chain.backbone_mask[2].tolist() == [False, True, True, True]
    angles, defined = chain.dihedrals()
    # every angle of K needs its N; G's psi would need K's N (S, with no CA, is skipped);
    # V's phi and omega only need K's C, which is bonded to V's N
    assert defined[2].tolist() == [False, False, False]
    assert not defined[1, 1]
    assert defined[3, 0] and defined[3, 2]
    assert (angles[2] == 0.0).all()


def test_mmcif_and_gzip_read_the_same_protein(structures_dir):
    cif = read_chains(structures_dir / "biopython" / "1A8O.cif")
    pdb = read_chains(structures_dir / "biopython" / "1A8O.pdb.gz")
    assert [c.sequence for c in cif] == [c.sequence for c in pdb]
    np.testing.assert_array_equal(cif[0].backbone, pdb[0].backbone)
    # 1A8O's selenomethionines are HETATM MSE records: kept, read as M
    assert "MSE" in cif[0].residue_names.tolist()
    assert cif[0].sequence[cif[0].residue_names.tolist().index("MSE")] == "M"


def test_chain_selection(structures_dir):
    path = structures_dir / "masif" / "1A2K_AB.pdb.gz"
    assert [c.chain_id for c in read_chains(path)] == ["A", "B"]
    assert [c.chain_id for c in read_chains(f"{path}:B")] == ["B"]
    assert [c.chain_id for c in read_chains(f"{path}:B,A")] == ["A", "B"]
    with pytest.raises(StructureError, match=r"no protein chain Z \(protein chains: A, B\)"):
        read_chains(f"{path}:Z")
    assert split_selection(f"{path}:B") == (path, ("B",))
    assert split_selection(str(path)) == (path, None)


def test_parent_letters():
    assert [parent_letter(n) for n in ("MSE", "SEP", "HIE", "UNK", "ALA", "HOH")] == [
        "M",
        "S",
        "H",
        "X",
        "A",
        None,
    ]


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.pdb", b"", "empty file"),
        ("blank.cif", b"\n\n   \n", "empty file"),
        ("binary.pdb", bytes(range(256)) * 8, "binary content"),
        ("fake.pdb.gz", b"ATOM  plain text", "named .gz but is not gzip"),
        ("words.pdb", b"HEADER nothing here\nREMARK no atoms\n", "no ATOM or HETATM records"),
        ("mystery.dat", b"hello world\n", "cannot tell the format"),
    ],
)
def test_bad_files_raise_structure_errors_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    for reader in READERS:
        with pytest.raises(StructureError, match=reason) as info:
            read_chains(path, reader=reader)
        assert str(path) in str(info.value)


def test_truncated_gzip(tmp_path, structures_dir):
    data = (structures_dir / "masif" / "1A2K_AB.pdb.gz").read_bytes()
    path = tmp_path / "cut.pdb.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StructureError, match="truncated gzip"):
        read_chains(path)


@pytest.mark.parametrize("reader", READERS)
def test_truncated_line_and_nucleic_acid_only(tmp_path, reader):
    text, _ = strand("A", ("ALA", "GLY"))
    cut = write(tmp_path, "cut.pdb", text[: len(text) - 30])
    with pytest.raises(StructureError, match=r"cut\.pdb"):
        read_chains(cut, reader=reader)
    rna = ""
    for i, base in enumerate("ACGU"):
        for j, name in enumerate(("P", "C1'", "N1")):
            rna += atom(3 * i + j + 1, name, base, "R", i + 1, (i * 6.0, j, 0))
    path = write(tmp_path, "rna.pdb", rna)
    with pytest.raises(StructureError, match="not a protein"):
        read_chains(path, reader=reader)
    ligand = write(tmp_path, "ligand.pdb", atom(1, "C1", "LIG", "A", 1, (0, 0, 0), record="HETATM"))
    with pytest.raises(StructureError, match="no amino-acid backbone"):
        read_chains(ligand, reader=reader)


def test_missing_file():
    with pytest.raises(StructureError, match="no such file"):
        read_chains("/nonexistent/x.pdb")


# ---------------------------------------------------------------------------- geometry


def test_dihedral_signs_and_values():
    # a trans (180°) and a +90° dihedral, by construction
    p0, p1, p2 = np.array([1.0, 1, 0]), np.array([0.0, 0, 0]), np.array([0.0, 0, 1])
    assert abs(dihedral(p0, p1, p2, np.array([-1.0, -1, 1]))) == pytest.approx(np.pi)
    quarter = dihedral(np.array([1.0, 0, 0]), p1, p2, np.array([0.0, 1, 1]))
    # IUPAC: looking along p1->p2 (+z), turning x onto y is clockwise seen from behind, +90
    assert quarter == pytest.approx(np.pi / 2)


def test_backbone_dihedrals_equal_dihedral_in_a_planar_backbone():
    # every atom at z = 0 on integer-ish coordinates: the normals' dot products are sums of
    # exact zeros, whose sign decides pi against -pi (found in review: -0.0 gave -pi)
    backbone = np.zeros((3, 4, 3))
    backbone[:, :3, :2] = [
        [[0.0, 0.0], [-0.5, -1.3], [0.9, -1.7]],
        [[2.0, -2.6], [3.0, -1.7], [3.4, -3.0]],
        [[4.8, -3.2], [5.5, -2.0], [7.0, -2.4]],
    ]
    mask = np.ones((3, 4), dtype=bool)
    angles, defined = backbone_dihedrals(backbone, mask, max_bond=10.0)
    n, ca, c = backbone[:, 0], backbone[:, 1], backbone[:, 2]
    for i in range(3):
        expected = [
            dihedral(c[i - 1], n[i], ca[i], c[i]) if i > 0 else None,  # phi
            dihedral(n[i], ca[i], c[i], n[i + 1]) if i < 2 else None,  # psi
            dihedral(ca[i - 1], c[i - 1], n[i], ca[i]) if i > 0 else None,  # omega
        ]
        for k, value in enumerate(expected):
            assert defined[i, k] == (value is not None)
            if value is not None:  # bit for bit: the sign of pi and of 0 included
                assert np.float64(value).tobytes() == angles[i, k].tobytes(), (i, k, value, angles[i, k])


def test_gap_masks_angles_across_it(structures_dir):
    (chain,) = read_chains(structures_dir / "masif" / "1A2K_AB.pdb.gz:A")
    backbone, mask = chain.backbone.copy(), chain.backbone_mask.copy()
    backbone[60:] += np.array([0.0, 0.0, 4.0], dtype=np.float32)  # pull the chain apart
    bonded = peptide_bonds(backbone, mask)
    assert not bonded[59] and bonded[58] and bonded[60]
    angles, defined = backbone_dihedrals(backbone, mask)
    assert not defined[59, 1] and not defined[60, 0] and not defined[60, 2]
    assert defined[59, 0] and defined[60, 1]
    assert (angles[~defined] == 0).all()
    # chain ends
    assert not defined[0, 0] and not defined[0, 2] and not defined[-1, 1]


def _bio_angles(path: Path, chain_ids: list[str]):
    """phi/psi/omega per (chain, number, icode) from Bio.PDB's internal coordinates, with
    its peptide-bond limit set to ours; point-mutation positions are left out."""
    from Bio.PDB import MMCIFParser, PDBParser
    from Bio.PDB.internal_coords import IC_Chain, IC_Residue

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    parser = MMCIFParser(QUIET=True) if ".cif" in path.name else PDBParser(QUIET=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = next(iter(parser.get_structure("x", io.StringIO(raw.decode("latin-1")))))
        # Bio.PDB leaves modified residues out of its internal coordinates unless told
        # (by HETATM id at the chain level, by name at the residue level).
        residues = list(model.get_residues())
        hetero = tuple({r.id[0] for r in residues} | {r.get_resname() for r in residues})
        saved = (IC_Chain.MaxPeptideBond, IC_Residue.accept_resnames, IC_Residue.no_altloc)
        IC_Chain.MaxPeptideBond, IC_Residue.accept_resnames, IC_Residue.no_altloc = (
            2.0,
            saved[1] + hetero,
            True,
        )
        try:
            model.atom_to_internal_coordinates()
        finally:
            IC_Chain.MaxPeptideBond, IC_Residue.accept_resnames, IC_Residue.no_altloc = saved
    out = {}
    for chain in model:
        if (chain.id.strip()) not in chain_ids:
            continue
        residues = list(chain)
        for j, residue in enumerate(residues):
            if residue.is_disordered() == 2 or residue.internal_coord is None:
                continue
            ic = residue.internal_coord
            # Our chains skip residues without CA, Bio.PDB does not: an angle that needs a
            # CA-less neighbour's N or C is only comparable when that neighbour has a CA.
            neighbours = [
                residues[j - 1] if j > 0 else None,
                residues[j + 1] if j + 1 < len(residues) else None,
            ]
            ca_less = [n is not None and "CA" not in n for n in neighbours]
            out[(chain.id.strip(), residue.id[1], residue.id[2].strip())] = [
                "skip" if ca_less[0] else ic.get_angle("phi"),
                "skip" if ca_less[1] else ic.get_angle("psi"),
                "skip" if ca_less[0] else ic.get_angle("omega"),
            ]
    return out


@pytest.mark.parametrize(
    "relative",
    [
        "biopython/1A8O.cif",
        "biopython/1LCD.pdb.gz",
        "biopython/2XHE.pdb.gz",
        "masif/1A2K_AB.pdb.gz",
        "mdanalysis/1mr1D_failing.pdb.gz",
        "mdanalysis/3KPR.cif.gz",
        "db55_unbound/1AHW_l_u.pdb.gz",
    ],
)
def test_dihedrals_match_biopython_internal_coordinates(structures_dir, relative):
    path = structures_dir / relative
    chains = read_chains(path)
    reference = _bio_angles(path, [c.chain_id for c in chains])
    compared = 0
    for chain in chains:
        angles, defined = chain.dihedrals()
        for i in range(len(chain)):
            key = (chain.chain_id, int(chain.residue_numbers[i]), chain.insertion_codes[i])
            if key not in reference:
                continue
            for k, theirs in enumerate(reference[key]):
                if theirs == "skip":
                    continue
                assert defined[i, k] == (theirs is not None), (key, k)
                if theirs is not None:
                    difference = (np.radians(theirs) - angles[i, k] + np.pi) % (2 * np.pi) - np.pi
                    assert abs(difference) < 1e-3, (key, k)
                    compared += 1
    assert compared > 100
