"""protsteps embed: values equal the encoder's own, order and batching, file formats."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from protsteps import collate, featurize
from protsteps.cli import main
from protsteps.downstream import embed, load_embeddings, scratch_backbone
from protsteps.errors import ProtstepsError
from protsteps.export import load_encoder
from protsteps.registry import default_catalog
from protsteps.runconfig import load_run_config

pytestmark = pytest.mark.slow


def test_embeddings_are_the_encoders_output_in_input_order(pretrain_run, small_structures, graph_cache):
    inputs = [small_structures[2], small_structures[0], small_structures[1]]
    result = embed(inputs, pretrain_run, per_residue=True, batch_size=2, cache_dir=graph_cache)
    assert result.source == [str(p) for p in inputs] and result.chain == ["A", "A", "D"]
    encoder, _ = load_encoder(pretrain_run)
    encoder.eval()
    for i, path in enumerate(inputs):
        with torch.no_grad():
            output = encoder(collate(featurize(path)))
        np.testing.assert_allclose(result.embeddings[i], output.graph[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.residue_embeddings_of(i), output.node.numpy(), rtol=1e-5, atol=1e-6)
        assert result.residues[i] == output.node.shape[0] == len(result.sequence[i])
        numbers = result.residue_number[result.offsets[i] : result.offsets[i + 1]]
        assert numbers.tolist() == featurize(path)[0].residue_number.tolist()
    # what a protein is batched with does not change its embedding
    alone = embed(inputs, pretrain_run, batch_size=1, cache_dir=graph_cache)
    np.testing.assert_allclose(alone.embeddings, result.embeddings, rtol=1e-5, atol=1e-6)
    assert alone.residue_embeddings is None


def test_a_teacher_backbone_embeds_with_the_teachers_features(
    small_structures, graph_cache, tiny_esm_weights
):
    config = load_run_config(
        None,
        default_catalog(),
        components={"teacher": "esm"},
        sets=[f'teacher.weights="{tiny_esm_weights}"', "encoder.hidden_dim=16"],
    )
    backbone = scratch_backbone(config, default_catalog())
    result = embed(small_structures[:2], backbone, cache_dir=graph_cache)
    backbone.encoder.eval()
    with torch.no_grad():
        batch = collate(featurize(small_structures[1]))
        expected = backbone.encoder(batch, backbone.teacher(batch.sequences)).graph[0]
        without = backbone.encoder(batch, torch.zeros(batch.num_nodes, backbone.teacher.embed_dim)).graph[0]
    np.testing.assert_allclose(result.embeddings[1], expected.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(result.embeddings[1], without.numpy(), atol=1e-4)
    assert result.meta["teacher"] == "esm"


def test_npz_and_parquet_round_trips(pretrain_run, small_structures, graph_cache, tmp_path):
    pytest.importorskip("pyarrow")
    result = embed(
        [small_structures[0], tmp_path / "missing.pdb", small_structures[3]],
        pretrain_run,
        per_residue=True,
        cache_dir=graph_cache,
    )
    assert [f["source"] for f in result.failed] == [str(tmp_path / "missing.pdb")]
    for name in ("e.npz", "e.parquet"):
        result.save(tmp_path / name)
        back = load_embeddings(tmp_path / name)
        np.testing.assert_array_equal(back.embeddings, result.embeddings)
        np.testing.assert_array_equal(back.residue_embeddings, result.residue_embeddings)
        np.testing.assert_array_equal(back.offsets, result.offsets)
        np.testing.assert_array_equal(back.residue_number, result.residue_number)
        assert (back.source, back.chain, back.sequence) == (result.source, result.chain, result.sequence)
        assert back.failed == result.failed and back.meta == result.meta
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column_names == [
        "source",
        "chain",
        "residues",
        "sequence",
        "embedding",
        "residue_embedding",
        "residue_number",
    ]
    assert table.num_rows == 2


@pytest.mark.parametrize("per_residue", [True, False])
def test_parquet_is_written_in_row_groups_and_read_back_exactly(
    pretrain_run, small_structures, graph_cache, tmp_path, monkeypatch, per_residue
):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from protsteps.downstream import _embed

    result = embed(small_structures[:5], pretrain_run, per_residue=per_residue, cache_dir=graph_cache)
    assert len(result) >= 5
    monkeypatch.setattr(_embed, "PARQUET_GROUP_ROWS", 100 if per_residue else 2)
    result.save(tmp_path / "e.parquet")
    groups = pq.ParquetFile(tmp_path / "e.parquet").metadata.num_row_groups
    assert 2 < groups <= len(result)  # chains split into several row groups, none empty
    back = load_embeddings(tmp_path / "e.parquet")
    np.testing.assert_array_equal(back.embeddings, result.embeddings)
    np.testing.assert_array_equal(back.residues, result.residues)
    assert (back.source, back.chain, back.sequence) == (result.source, result.chain, result.sequence)
    if per_residue:
        np.testing.assert_array_equal(back.residue_embeddings, result.residue_embeddings)
        np.testing.assert_array_equal(back.offsets, result.offsets)
        np.testing.assert_array_equal(back.residue_number, result.residue_number)
    else:
        assert back.residue_embeddings is None and back.offsets is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_parquet_without_pyarrow_is_a_one_line_error(
    pretrain_run, small_structures, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    out = tmp_path / "e.parquet"
    assert main(["embed", str(small_structures[0]), "--from", str(pretrain_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs pyarrow: pip install 'protsteps[parquet]' (or pip install pyarrow)" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_embed_cli_errors(pretrain_run, small_structures, graph_cache, tmp_path, capsys):
    base = ["embed", "--from", str(pretrain_run), "--cache-dir", str(graph_cache)]
    assert main([*base, str(small_structures[0]), "--out", str(tmp_path / "e.txt")]) == 2
    assert "the file name must end in .h5, .hdf5, .npz or .parquet" in capsys.readouterr().err
    assert main([*base, str(tmp_path / "missing.pdb"), "--out", str(tmp_path / "e.npz")]) == 2
    err = capsys.readouterr().err
    assert "nothing could be embedded: 1 input failed (first:" in err and "missing.pdb" in err
    assert not (tmp_path / "e.npz").exists()
    assert main([*base, str(small_structures[0]), "--out", str(tmp_path / "e.npz")]) == 0
    with np.load(tmp_path / "e.npz") as npz:
        assert "residue_embeddings" not in npz.files and npz["embeddings"].shape == (1, 32)
    assert (
        main(["embed", str(small_structures[0]), "--from", str(tmp_path), "--out", str(tmp_path / "f.npz")])
        == 2
    )
    assert "encoder.pt does not exist" in capsys.readouterr().err


def _files_under(folder):
    return [p for p in folder.rglob("*") if p.is_file()]


def test_embed_and_finetune_set_the_teachers_cache_folder_of_a_pretrained_encoder(
    small_structures, tiny_esm_weights, graph_cache, labels_dir, tmp_path, capsys
):
    """``--set teacher.cache_dir=DIR`` with a pretrained encoder: the teacher's trunk states
    go to DIR (a file never decides where protsteps writes, the user does); anything but a
    location is refused in one line, naming what can be set."""
    from tests.cli_args import pretrain_args

    run = tmp_path / "run"
    teacher = ["--set", f'teacher.weights="{tiny_esm_weights}"', "--set", "teacher.cache=true"]
    assert main(pretrain_args(small_structures[:4], run, graph_cache, *teacher, teacher="esm")) == 0
    trunks = tmp_path / "trunks"
    out = tmp_path / "e.npz"
    args = ["embed", *map(str, small_structures[:2]), "--from", str(run), "--out", str(out)]
    assert main([*args, "--cache-dir", str(graph_cache), "--set", f"teacher.cache_dir={trunks}"]) == 0
    assert len(_files_under(trunks)) == 2, "one trunk file per sequence"
    capsys.readouterr()

    for wrong, message in (
        (
            "teacher.layers=3",
            "layers cannot be set for a pretrained encoder (only its locations can: cache_dir",
        ),
        (
            "train.epochs=3",
            "with a pretrained encoder only the locations of its featurizer, encoder and teacher",
        ),
        ("cache_dir=/x", "expected KIND.KEY=VALUE"),
        ("teacher.cache_dir=", "no value; give a path"),
    ):
        assert main([*args, "--set", wrong]) == 2
        assert message in capsys.readouterr().err.replace("\n", " "), wrong
    twice = ["--set", f"teacher.cache_dir={trunks}", "--set", "teacher.cache_dir=/elsewhere"]
    assert main([*args, *twice]) == 2
    assert "teacher.cache_dir is given twice" in capsys.readouterr().err
    # an encoder trained without a teacher has no teacher locations
    bare = tmp_path / "bare"
    assert main(pretrain_args(small_structures[:4], bare, graph_cache)) == 0
    bare_args = ["embed", str(small_structures[0]), "--from", str(bare), "--out", str(tmp_path / "b.npz")]
    assert main([*bare_args, "--set", f"teacher.cache_dir={trunks}"]) == 2
    assert "the encoder file has no teacher (it was trained without one)" in capsys.readouterr().err
    # a Backbone already built takes no locations
    from protsteps.downstream import load_backbone

    with pytest.raises(ProtstepsError, match="apply to an encoder read from a file"):
        embed(small_structures[:1], load_backbone(run), settings={"teacher": {"cache_dir": str(trunks)}})

    labels = tmp_path / "labels.tsv"
    splits = ["train"] * 4 + ["valid", "test"]
    rows = [f"{p}\t{c}\t{s}" for p, c, s in zip(small_structures, "ababab", splits, strict=True)]
    labels.write_text("path\tlabel\tsplit\n" + "\n".join(rows) + "\n")
    tuned = tmp_path / "tuned"
    finetune = ["finetune", str(labels), "--from", str(run), "--out", str(tuned), "--epochs", "1", "-q"]
    trunks2 = f"teacher.cache_dir={tmp_path / 'trunks2'}"
    assert main([*finetune, "--cache-dir", str(graph_cache), "--set", trunks2]) == 0
    assert len(_files_under(tmp_path / "trunks2")) == len(small_structures)
