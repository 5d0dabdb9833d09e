"""Adapters on real label files: IEConv ProtFunct and DeepLoc-style labels with AlphaFold
DB file names (real structures copied under those names)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from protsteps.downstream import ManifestError, StructureIndex, deeploc, protfunct

PROTFUNCT_CHAINS = 37_428


@pytest.fixture(scope="module")
def protfunct_root(shared_data: Path) -> Path:
    root = shared_data / "labels" / "ieconv" / "ProtFunct"
    if not (root / "chain_functions.txt").exists():
        pytest.skip(f"ProtFunct label files missing under {root}")
    return root


@pytest.fixture(scope="module")
def ec_chains(shared_data: Path) -> dict[str, dict[str, str]]:
    """ec_chains.tsv by ProtFunct chain name (``1q5h.A``): the EC number and split that the
    data README derived from ProtFunct, to check the adapter against."""
    with open(shared_data / "labels" / "ec_chains.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return {r["pdb_chain"].split(".")[0] + "." + r["chain"]: r for r in rows}


def copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.name.endswith(".gz") and not target.name.endswith(".gz"):
        import gzip

        target.write_bytes(gzip.decompress(source.read_bytes()))
    else:
        shutil.copyfile(source, target)
    return target


def test_protfunct_finds_chains_under_every_naming_and_reports_the_rest(
    protfunct_root: Path, structures_dir: Path, ec_chains, tmp_path: Path
):
    masif, mda = structures_dir / "masif", structures_dir / "mdanalysis"
    folder = tmp_path / "pdb"
    copy(masif / "1ZR0_A.pdb.gz", folder / "1zr0.A.pdb.gz")  # pdb.CHAIN
    copy(masif / "2GD4_B.pdb.gz", folder / "2GD4_B.pdb")  # upper case, not gzipped
    copy(mda / "3k7pA.pdb.gz", folder / "3k7pA.pdb.gz")  # pdbCHAIN
    copy(masif / "1SHY_B.pdb.gz", folder / "entries" / "1SHY.pdb.gz")  # the whole entry, in a subfolder
    copy(masif / "1EWY_A.pdb.gz", folder / "1EWY_A.pdb.gz")  # two files differing in case only
    copy(masif / "1ewy_A.pdb.gz", folder / "1ewy_A.pdb.gz")

    data = protfunct(protfunct_root, folder)
    found = {Path(r.path).name: r for r in data.rows}
    assert set(found) == {"1zr0.A.pdb.gz", "2GD4_B.pdb", "3k7pA.pdb.gz", "1SHY.pdb.gz", "1ewy_A.pdb.gz"}
    by_name = {f"{r.group}": r for r in data.rows}
    splits = {"training": "train", "validation": "valid", "testing": "test"}
    for name in ("1zr0.A", "2gd4.B", "3k7p.A", "1shy.B", "1ewy.A"):
        row, truth = by_name[name], ec_chains[name]
        assert row.labels == (truth["ec_number"],), name
        assert row.split == splits[truth["ieconv_split"]], name
        assert row.chain == name.split(".")[1]
    assert by_name["1shy.B"].spec.endswith("1SHY.pdb.gz:B")  # the chain is selected in the entry
    assert any("differing only in case" in n for n in data.notes)

    assert len(data.rows) + len(data.skipped) == PROTFUNCT_CHAINS
    first = data.skipped[0]
    assert first.origin == "chain_functions.txt:1"
    assert first.reason.startswith("no structure file for 4fae.B in ")
    assert "4fae_B" in first.reason and "gzipped or not" in first.reason

    classes = protfunct(protfunct_root, folder, label_column="ec_class")
    assert {r.group: r.labels for r in classes.rows}["3k7p.A"] == ("5",)


def test_protfunct_on_the_shared_structures_finds_the_ec_chains(protfunct_root, structures_dir, ec_chains):
    data = protfunct(protfunct_root, structures_dir)
    names = {r.group for r in data.rows}
    # every chain of ec_chains.tsv (derived from ProtFunct) is found under its shared file name
    assert set(ec_chains) <= {f"{g.split('.')[0]}.{g.split('.')[1]}" for g in names}
    assert len(data.rows) == 40


def write_protfunct(root: Path, functions: str, lines: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "unique_functions.txt").write_text(functions)
    (root / "chain_functions.txt").write_text(lines)
    for name in ("training.txt", "validation.txt", "testing.txt"):
        (root / name).write_text("1abc.A\n" if name == "training.txt" else "")
    return root


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("1abc.A\n", "chain_functions.txt:1: expected 'pdb.CHAIN,index'"),
        ("1abc.A,7\n", "chain_functions.txt:1: '7' is not an index of unique_functions.txt (0..1)"),
        ("1abcA,0\n", "expected 'pdb.CHAIN,index'"),
    ],
)
def test_protfunct_format_errors_name_the_line(tmp_path: Path, lines: str, message: str):
    root = write_protfunct(tmp_path / "pf", "1.1.1.1\n2.7.11.1\n", lines)
    (tmp_path / "s").mkdir()
    with pytest.raises(ManifestError) as error:
        protfunct(root, tmp_path / "s")
    assert message in str(error.value)


def test_protfunct_label_and_folder_errors(tmp_path: Path):
    root = write_protfunct(tmp_path / "pf", "1.1.1.1\n", "1abc.A,0\n2xyz.B,0\n")
    (tmp_path / "s").mkdir()
    with pytest.raises(ManifestError, match="ProtFunct labels are ec_number or ec_class, not 'ec'"):
        protfunct(root, tmp_path / "s", label_column="ec")
    with pytest.raises(ManifestError, match=r"structure folder .*nowhere does not exist"):
        protfunct(root, tmp_path / "nowhere")
    with pytest.raises(ManifestError, match=r"testing.txt does not exist"):
        (root / "testing.txt").unlink()
        protfunct(root, tmp_path / "s")


def test_protfunct_chain_in_no_split_file_is_skipped(tmp_path: Path):
    root = write_protfunct(tmp_path / "pf", "1.1.1.1\n", "1abc.A,0\n2xyz.B,0\n")
    (tmp_path / "s").mkdir()
    data = protfunct(root, tmp_path / "s")
    assert [s.reason for s in data.skipped][1] == "2xyz.B is in no split file"


# ---------------------------------------------------------------------------- DeepLoc


@pytest.fixture
def alphafold(structures_dir: Path, tmp_path: Path) -> Path:
    """Real structures under AlphaFold DB names: P12345 in versions 1 and 4 (and an F2
    fragment), Q99999 in version 2, not gzipped."""
    masif = structures_dir / "masif"
    folder = tmp_path / "afdb"
    copy(masif / "1BRS_A.pdb.gz", folder / "AF-P12345-F1-model_v1.pdb.gz")
    copy(masif / "1BRS_D.pdb.gz", folder / "v4" / "AF-P12345-F1-model_v4.pdb.gz")
    copy(masif / "1NPO_A.pdb.gz", folder / "AF-P12345-F2-model_v4.pdb.gz")
    copy(masif / "1I07_A.pdb.gz", folder / "AF-Q99999-F1-model_v2.pdb")
    return folder


def test_deeploc_csv_with_accessions_newest_model_and_missing_ones(alphafold: Path, tmp_path: Path):
    labels = tmp_path / "deeploc.csv"
    labels.write_text(
        "ACC,Location,Membrane,split\n"
        "P12345,Cytoplasm,S,train\n"
        "q99999,Nucleus,M,test\n"
        "O00000,Nucleus,M,train\n"
        "P12345,,M,train\n"
    )
    data = deeploc(labels, alphafold, label_column="Location")
    assert [(Path(r.path).name, r.labels, r.split, r.chain) for r in data.rows] == [
        ("AF-P12345-F1-model_v4.pdb.gz", ("Cytoplasm",), "train", None),
        ("AF-Q99999-F1-model_v2.pdb", ("Nucleus",), "test", None),
    ]
    reasons = [s.reason for s in data.skipped]
    assert reasons[0].startswith("no AlphaFold file AF-O00000-F1-model_v*.pdb/.cif(.gz) in ")
    assert reasons[1] == "P12345: no label in column 'Location'"
    assert any("several AlphaFold model versions" in n for n in data.notes)
    membrane = deeploc(labels, alphafold, label_column="Membrane", id_column="ACC")
    assert [r.labels for r in membrane.rows] == [("S",), ("M",), ("M",)]


def test_deeploc_fasta_gives_location_membrane_and_the_test_flag(alphafold: Path, tmp_path: Path):
    labels = tmp_path / "deeploc_data.fasta"
    labels.write_text(
        ">P12345 Cytoplasm-S\nMKVLA\n>Q99999 Nucleus-U test\nMKV\nLLA\n>O00000 Cell.membrane-M\nAA\n"
    )
    location = deeploc(labels, alphafold)
    assert [(r.group, r.labels, r.split) for r in location.rows] == [
        ("P12345", ("Cytoplasm",), "train"),
        ("Q99999", ("Nucleus",), "test"),
    ]
    membrane = deeploc(labels, alphafold, label_column="membrane")
    assert [(r.group, r.labels) for r in membrane.rows] == [("P12345", ("soluble",))]
    assert membrane.skipped[0].reason == "Q99999: membrane label unknown (U)"


@pytest.mark.parametrize(
    ("name", "text", "kwargs", "message"),
    [
        ("x.csv", "protein,location\nP1,Nucleus\n", {}, "no accession column (looked for id, acc"),
        ("x.csv", "id,location\nP1,Nucleus\n", {"label_column": "loc"}, "no column 'loc'"),
        ("x.csv", "id,location\nP1,Nucleus\n", {"id_column": "uniprot"}, "no column 'uniprot'"),
        ("x.fasta", ">P1 Nucleus\nMK\n", {}, "expected a DeepLoc header"),
        ("x.fasta", ">P1 Nucleus-M\nMK\n", {"label_column": "kingdom"}, "'location' or 'membrane'"),
        ("x.fasta", "MKV\n", {}, "no FASTA headers"),
    ],
)
def test_deeploc_errors(alphafold: Path, tmp_path: Path, name: str, text: str, kwargs: dict, message: str):
    labels = tmp_path / name
    labels.write_text(text)
    with pytest.raises(ManifestError) as error:
        deeploc(labels, alphafold, **kwargs)
    assert message in str(error.value) and name in str(error.value)


def test_structure_index_strips_gz_and_structure_suffixes(tmp_path: Path):
    for name in ("1ABC_A.pdb.gz", "x/2xyz.cif", "notes.txt", "3def.ent"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("ATOM\n")
    index = StructureIndex(tmp_path)
    assert sorted(index.by_stem) == ["1abc_a", "2xyz", "3def"]
    assert index.find(["nope", "1abc_A"])[0] == tmp_path / "1ABC_A.pdb.gz"
