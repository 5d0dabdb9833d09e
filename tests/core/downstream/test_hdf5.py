"""protsteps embed --out x.h5: the HDF5 writer of the built-in plugin downstream, read back
with h5py as ProtTrans-style scripts read it, keyed like the .npz output."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from protsteps.cli import main
from protsteps.downstream import Embeddings, load_embeddings
from protsteps.errors import ProtstepsError
from protsteps.extensions import writer_for
from protsteps.registry import default_catalog
from protsteps_downstream.hdf5 import GROUP, dataset_name, key_of, read_hdf5

pytestmark = pytest.mark.slow


def embed_args(
    pretrain_run: Path, graph_cache: Path, inputs: list[Path], out: Path, *extra: str
) -> list[str]:
    return [
        "embed",
        *map(str, inputs),
        "--from",
        str(pretrain_run),
        "--cache-dir",
        str(graph_cache),
        "--out",
        str(out),
        *extra,
    ]


def test_embed_to_h5_reads_back_with_h5py_keyed_like_the_npz(
    pretrain_run, small_structures, graph_cache, tmp_path, capsys
):
    h5py = pytest.importorskip("h5py")
    inputs = [small_structures[2], small_structures[0], tmp_path / "missing.pdb", small_structures[1]]
    for name in ("e.npz", "e.h5"):
        assert main(embed_args(pretrain_run, graph_cache, inputs, tmp_path / name, "--per-residue")) == 0
    reference = load_embeddings(tmp_path / "e.npz")
    keys = [f"{s}:{c}" for s, c in zip(reference.source, reference.chain, strict=True)]
    assert keys == [f"{p}:A" for p in small_structures[2::-2]] + [f"{small_structures[1]}:D"]

    # what a ProtTrans-style script does: one dataset per chain at the root, by name
    with h5py.File(tmp_path / "e.h5", "r") as h5:
        chains = {name: item for name, item in h5.items() if isinstance(item, h5py.Dataset)}
        assert sorted(chains) == sorted(dataset_name(k) for k in keys)
        assert set(h5) == {*chains, GROUP}
        for i, key in enumerate(keys):
            name = dataset_name(key)
            assert "/" not in name and key_of(name) == key
            per_residue = h5[name][()]
            assert per_residue.dtype == np.float32 and per_residue.shape == (reference.residues[i], 32)
            np.testing.assert_array_equal(per_residue, reference.residue_embeddings_of(i))
            assert h5[name].attrs["original_id"] == key
            assert (h5[name].attrs["source"], h5[name].attrs["chain"]) == (
                reference.source[i],
                reference.chain[i],
            )
        group = h5[GROUP]
        np.testing.assert_array_equal(group["embeddings"][()], reference.embeddings)
        assert group["key"].asstr()[()].tolist() == keys
        assert group["sequence"].asstr()[()].tolist() == reference.sequence
        np.testing.assert_array_equal(group["offsets"][()], reference.offsets)
        np.testing.assert_array_equal(group["residue_number"][()], reference.residue_number)
        assert group["failed_source"].asstr()[()].tolist() == [str(tmp_path / "missing.pdb")]
        assert bool(group.attrs["per_residue"]) is True

    # read back whole, through the plugin's reader and the embeddings command
    back = read_hdf5(tmp_path / "e.h5")
    for field in ("embeddings", "residues", "residue_embeddings", "residue_number", "offsets"):
        np.testing.assert_array_equal(getattr(back, field), getattr(reference, field))
    assert (back.source, back.chain, back.sequence) == (reference.source, reference.chain, reference.sequence)
    assert back.failed == reference.failed and back.meta == reference.meta
    capsys.readouterr()
    assert main(["embeddings", "show", str(tmp_path / "e.h5")]) == 0
    residues = int(reference.residues.sum())
    assert (
        f"3 chains, d = 32, per-residue embeddings: {residues}, failed inputs: 1" in capsys.readouterr().out
    )
    assert main(["embeddings", "convert", str(tmp_path / "e.h5"), str(tmp_path / "again.npz")]) == 0
    np.testing.assert_array_equal(load_embeddings(tmp_path / "again.npz").embeddings, reference.embeddings)


def test_without_per_residue_each_chain_is_its_pooled_vector(
    pretrain_run, small_structures, graph_cache, tmp_path
):
    h5py = pytest.importorskip("h5py")
    out = tmp_path / "pooled.hdf5"  # the other suffix picks the same writer
    assert main(embed_args(pretrain_run, graph_cache, small_structures[:2], out)) == 0
    with h5py.File(out, "r") as h5:
        group = h5[GROUP]
        keys = group["key"].asstr()[()].tolist()
        assert len(keys) == 2 and bool(group.attrs["per_residue"]) is False
        assert "offsets" not in group and "residue_number" not in group
        for i, key in enumerate(keys):
            assert h5[dataset_name(key)].shape == (32,)  # ProtTrans' per-protein layout
            np.testing.assert_array_equal(h5[dataset_name(key)][()], group["embeddings"][i])
    assert read_hdf5(out).residue_embeddings is None


def handmade(sources: list[str], chains: list[str]) -> Embeddings:
    count = len(sources)
    lengths = np.arange(2, 2 + count, dtype=np.int64)
    rows = int(lengths.sum())
    return Embeddings(
        embeddings=np.arange(count * 3, dtype=np.float32).reshape(count, 3),
        source=sources,
        chain=chains,
        residues=lengths,
        sequence=["A" * int(n) for n in lengths],
        residue_embeddings=np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) / 7,
        residue_number=np.arange(rows, dtype=np.int64),
        offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
        failed=[{"source": "bad.pdb", "error": "no protein chain"}],
        meta={"dim": 3},
    )


def test_keys_with_slashes_colons_and_percent_signs_round_trip(tmp_path):
    h5py = pytest.importorskip("h5py")
    sources = ["/data/afdb/AF-P1-F1.cif.gz", "odd%2Fname/x.pdb", "C:/win:dows/y.pdb", "."]
    embeddings = handmade(sources, ["A", "B:2", "/", "A"])
    out = tmp_path / "keys.H5"
    embeddings.save(out)  # chosen by the suffix, case aside
    with h5py.File(out, "r") as h5:
        names = [name for name, item in h5.items() if isinstance(item, h5py.Dataset)]
        assert sorted(key_of(n) for n in names) == sorted(
            f"{s}:{c}" for s, c in zip(sources, embeddings.chain, strict=True)
        )
        assert "odd%252Fname%2Fx.pdb:B:2" in names
        for name in names:
            assert h5[name].attrs["original_id"] == key_of(name)
    back = read_hdf5(out)
    assert back.source == sources and back.chain == embeddings.chain
    for i in range(len(sources)):
        np.testing.assert_array_equal(back.residue_embeddings_of(i), embeddings.residue_embeddings_of(i))


def test_a_chain_twice_is_refused_and_the_old_file_stays(tmp_path):
    pytest.importorskip("h5py")
    out = tmp_path / "e.h5"
    handmade(["a.pdb"], ["A"]).save(out)
    before = out.read_bytes()
    with pytest.raises(ProtstepsError, match=r"chain a\.pdb:A is embedded twice.*give each input once"):
        handmade(["a.pdb", "a.pdb"], ["A", "A"]).save(out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.h5"]  # no temporary file left


def test_the_writer_is_chosen_by_h5_and_hdf5_and_named_hdf5():
    extensions = default_catalog().extensions
    assert writer_for(extensions, "x.h5").name == "hdf5"
    assert writer_for(extensions, "X.HDF5").name == "hdf5"
    assert writer_for(extensions, "x.hdf5", "hdf5").name == "hdf5"
    with pytest.raises(
        ProtstepsError, match=r"the hdf5 writer writes \.h5 or \.hdf5 files; name the file x\.h5"
    ):
        writer_for(extensions, "x.npz", "hdf5")
    with pytest.raises(ProtstepsError, match=r"must end in .*\.h5, \.hdf5"):
        writer_for(extensions, "x.txt")


def test_h5_without_h5py_is_a_one_line_error_naming_the_extra(
    pretrain_run, small_structures, graph_cache, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    out = tmp_path / "e.h5"
    assert main(embed_args(pretrain_run, graph_cache, small_structures[:1], out)) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "error: writing or reading .h5/.hdf5 files needs h5py: pip install 'protsteps[hdf5]' (or pip install h5py)"
    )
    assert not out.exists()
