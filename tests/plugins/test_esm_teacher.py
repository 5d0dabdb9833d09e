"""The ESM-2 teacher: alignment with residues, layer choice, the trainable tail, windows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import protsteps
from protsteps.errors import ConfigError
from protsteps.teachers import assert_rows_line_up
from protsteps_esm import ESMTeacher, normalize_sequence, windows
from protsteps_esm.testing import structure_sequences, write_esm2_checkpoint

# Real chains: 1HE8 chain A (839 residues) and 1ZM4 chain C (825 residues) are the longest
# chains in the shared data; no chain there exceeds 1,022 residues, so the long-chain test
# joins these two into one 1,664-residue sequence.
LONG_PARTS = (("db55_unbound/1HE8_r_u.pdb.gz", "A"), ("db55_unbound/1ZM4_r_u.pdb.gz", "C"))
SHORT = (
    ("biopython/1A8O.cif", "A"),  # with selenomethionines (MSE) read as X
    ("masif/1t6b_X.pdb.gz", "X"),
    ("db55_unbound/1AK4_l_u.pdb.gz", None),
    ("mdanalysis/5PTI.cif.gz", "A"),
)


#: tiny models: see the ``one_thread`` fixture
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_esm2_checkpoint(
        tmp_path_factory.mktemp("esm") / "tiny.pt", num_layers=3, embed_dim=32, attention_heads=4
    )


@pytest.fixture(scope="module")
def real_sequences(structures_dir: Path) -> list[str]:
    out = []
    for name, chain in SHORT:
        chains = structure_sequences(structures_dir / name)
        out.append(chains[chain] if chain else next(iter(chains.values())))
    return out


def fair_esm_rows(teacher: ESMTeacher, sequences: list[str], layer: int) -> torch.Tensor:
    """The reference: fair-esm's own ESM2.forward, one sequence at a time, BOS/EOS dropped."""
    rows = []
    with torch.no_grad():
        for seq in sequences:
            tokens = teacher._tokens([normalize_sequence(seq)])
            rep = teacher.esm(tokens, repr_layers=[layer])["representations"][layer]
            rows.append(rep[0, 1 : len(seq) + 1])
    return torch.cat(rows)


def test_aligned_with_residues_of_real_chains(tiny: Path, real_sequences: list[str]) -> None:
    teacher = protsteps.build("teacher", "esm", weights=str(tiny), cache=False)
    out = teacher(real_sequences)
    assert out.shape == (sum(map(len, real_sequences)), teacher.embed_dim)
    # residue i of protein b is row ptr[b] + i, as in a protsteps.Batch
    torch.testing.assert_close(out, fair_esm_rows(teacher, real_sequences, 3), rtol=0, atol=1e-5)
    assert "X" in real_sequences[0]


def test_batched_with_padding_equals_one_at_a_time(tiny: Path, real_sequences: list[str]) -> None:
    # padded groups are what accelerators run; forced here on CPU
    one_batch = protsteps.build("teacher", "esm", weights=str(tiny), cache=False, max_tokens=100_000)
    one_batch.padded_groups = True
    assert [sorted(g) for g in one_batch._groups([len(s) for s in real_sequences], 0.0)] == [
        list(range(len(real_sequences)))
    ]
    one_each = protsteps.build("teacher", "esm", weights=str(tiny), cache=False, max_tokens=1)
    one_each.padded_groups = True
    torch.testing.assert_close(one_batch(real_sequences), one_each(real_sequences), rtol=0, atol=1e-5)


@pytest.mark.parametrize("cache", [False, True])
def test_on_cpu_each_sequence_runs_alone_and_gives_the_same_bits_in_any_company(
    tiny: Path, real_sequences: list[str], cache: bool
) -> None:
    teacher = protsteps.build("teacher", "esm", weights=str(tiny), cache=cache, max_tokens=100_000)
    assert teacher.padded_groups is None and teacher._groups([5, 9, 7], 0.0) == [[0], [1], [2]]
    together = teacher(real_sequences)
    alone = torch.cat([teacher([s]) for s in reversed(real_sequences)][::-1])
    assert torch.equal(together, alone)
    # the cache on or off: the same bits (the cache holds what the trunk computes alone)
    other = protsteps.build("teacher", "esm", weights=str(tiny), cache=not cache)
    other(real_sequences)
    assert torch.equal(other(real_sequences), together)


def test_unknown_residues_are_x(tiny: Path) -> None:
    teacher = protsteps.build("teacher", "esm", weights=str(tiny))
    assert normalize_sequence("mk*J-b.U1") == "MKXXXBXUX"
    torch.testing.assert_close(teacher(["MKJ*AC"]), teacher(["MKXXAC"]), rtol=0, atol=0)
    assert not torch.allclose(teacher(["MKJ*AC"]), teacher(["MKLLAC"]))


def test_empty_input(tiny: Path) -> None:
    teacher = protsteps.build("teacher", "esm", weights=str(tiny))
    assert teacher([]).shape == (0, 32)
    out = teacher(["", "MKT", ""])
    torch.testing.assert_close(out, teacher(["MKT"]))
    with pytest.raises(TypeError, match="list of strings"):
        teacher("MKT")


@pytest.mark.parametrize(
    ("layer", "k", "expected"), [(-1, 1, 3), (3, 2, 3), (2, 1, 2), (1, 1, 1), (-2, 0, 2), (0, 0, 0)]
)
def test_representation_layer(tiny: Path, layer: int, k: int, expected: int) -> None:
    teacher = protsteps.build("teacher", "esm", weights=str(tiny), layer=layer, trainable_layers=k)
    assert (teacher.layer, teacher.trunk_layers) == (expected, expected - k)
    seqs = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLE"]
    torch.testing.assert_close(teacher(seqs), fair_esm_rows(teacher, seqs, expected), rtol=0, atol=1e-5)
    names = set(teacher.tail_parameters())
    assert {n.split(".")[1] for n in names if n.startswith("layers.")} == {
        str(i) for i in range(expected - k, expected)
    }
    assert any(n.startswith("emb_layer_norm_after.") for n in names) == (expected == 3 and k > 0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"layer": 4}, "layer 4 is out of range: tiny has 3 transformer layers"),
        ({"layer": -5}, "layer -5 is out of range"),
        ({"layer": 1, "trainable_layers": 2}, "trainable_layers 2 must be in 0..1"),
        ({"window": 1023}, r"window = 1023 is out of range: it must be >= 1 and <= 1022"),
        ({"window": 100, "stride": 101}, "stride: 101 must be in 1..window"),
        ({"max_tokens": 0}, r"max_tokens = 0 is out of range: it must be >= 1"),
        ({"cache_mb": -1}, r"cache_mb = -1 is out of range: it must be >= 0"),
        ({"trainable_layers": -1}, r"trainable_layers = -1 is out of range: it must be >= 0"),
    ],
)
def test_settings_that_cannot_work_are_refused(tiny: Path, values: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        protsteps.build("teacher", "esm", weights=str(tiny), **values)


def test_tail_trains_and_trunk_stays_frozen(tiny: Path) -> None:
    teacher = protsteps.build("teacher", "esm", weights=str(tiny))
    teacher.train()
    assert teacher.tail.training and teacher.esm.layers[2].training
    assert not teacher.esm.training and not teacher.esm.layers[0].training
    assert not teacher.esm.layers[1].training
    teacher(["MKTAYIAKQR", "GSHMLEKL"]).square().mean().backward()
    tail = teacher.tail_parameters()
    assert tail and all(p.grad is not None and p.grad.abs().sum() > 0 for p in tail.values())
    trunk = [
        p
        for name, p in teacher.esm.named_parameters()
        if not name.startswith(("layers.2.", "emb_layer_norm_after."))
    ]
    assert all(not p.requires_grad and p.grad is None for p in trunk)
    # the module's parameters, state_dict included, are the tail only
    assert {id(p) for p in teacher.parameters()} == {id(p) for p in tail.values()}
    assert all(name.startswith("tail.") for name in teacher.state_dict())


def test_tail_replacement_and_second_order_gradient(tiny: Path) -> None:
    """The pseudo bi-level inner step: theta' = theta - alpha * grad, then the outer loss
    through forward(tail=theta'); d(outer)/d(phi) must include the second-order term. Checked
    against central finite differences in double precision."""
    teacher = protsteps.build("teacher", "esm", weights=str(tiny)).double()
    assert teacher.esm.layers[0].fc1.weight.dtype == torch.float64  # .double() reaches the trunk
    seqs = ["MKTAYIAKQRQISFVKSHF", "GSHMLEKLW"]
    theta = teacher.tail_parameters()
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(sum(map(len, seqs)), 32, generator=generator, dtype=torch.float64)

    def outer(phi: torch.Tensor, create_graph: bool) -> torch.Tensor:
        inner = (teacher(seqs) * target).sum() * phi
        grads = torch.autograd.grad(inner, list(theta.values()), create_graph=create_graph)
        updated = {n: p - 0.1 * g for (n, p), g in zip(theta.items(), grads, strict=True)}
        return teacher(seqs, tail=updated).square().sum()

    phi = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    (analytic,) = torch.autograd.grad(outer(phi, True), phi)
    eps = 1e-5
    plus = outer(torch.tensor(0.7 + eps, dtype=torch.float64), False).detach()
    minus = outer(torch.tensor(0.7 - eps, dtype=torch.float64), False).detach()
    numeric = (plus - minus) / (2 * eps)
    assert analytic.abs() > 1e-3
    torch.testing.assert_close(analytic, numeric, rtol=1e-4, atol=1e-6)
    # the stored tail is untouched by evaluating another one
    torch.testing.assert_close(teacher(seqs, tail=dict(theta)), teacher(seqs))


def test_tail_with_wrong_names_is_refused(tiny: Path) -> None:
    teacher = protsteps.build("teacher", "esm", weights=str(tiny))
    tail = teacher.tail_parameters()
    tail.pop("layers.2.fc1.weight")
    tail["layers.0.fc1.weight"] = teacher.esm.layers[0].fc1.weight
    with pytest.raises(ValueError, match=r"missing layers\.2\.fc1\.weight; unknown layers\.0\.fc1\.weight"):
        teacher(["MKT"], tail=tail)


def test_windows_cover_the_chain() -> None:
    assert windows(0, 10, 5) == []
    assert windows(7, 10, 5) == [(0, 7)]
    assert windows(10, 10, 5) == [(0, 10)]
    assert windows(23, 10, 5) == [(0, 10), (5, 15), (10, 20), (13, 23)]
    assert windows(1664, 1022, 511) == [(0, 1022), (511, 1533), (642, 1664)]


def test_long_real_chain_through_overlapping_windows(tiny: Path, structures_dir: Path) -> None:
    long_chain = "".join(structure_sequences(structures_dir / name)[chain] for name, chain in LONG_PARTS)
    assert len(long_chain) == 1664
    teacher = protsteps.build("teacher", "esm", weights=str(tiny), cache=False)
    out = teacher([long_chain, "MKTAY"])
    assert out.shape == (1669, 32)
    # reference: each window embedded on its own by fair-esm, averaged where windows overlap
    spans = windows(len(long_chain), 1022, 511)
    total = torch.zeros(len(long_chain), 32)
    count = torch.zeros(len(long_chain), 1)
    for a, b in spans:
        total[a:b] += fair_esm_rows(teacher, [long_chain[a:b]], 3)
        count[a:b] += 1
    assert count.min() == 1 and count.max() == 3
    torch.testing.assert_close(out[:1664], total / count, rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1664:], fair_esm_rows(teacher, ["MKTAY"], 3), rtol=0, atol=1e-5)


def test_short_windows_are_averaged(tiny: Path) -> None:
    teacher = protsteps.build("teacher", "esm", weights=str(tiny), window=12, stride=5)
    seq = "MKTAYIAKQRQISFVKSHFSRQ"  # 22 residues: windows [0,12) [5,17) [10,22)
    out = teacher([seq])
    first, middle, last = (fair_esm_rows(teacher, [seq[a:b]], 3) for a, b in windows(22, 12, 5))
    torch.testing.assert_close(out[:5], first[:5], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[5:10], (first[5:10] + middle[:5]) / 2, rtol=0, atol=1e-5)
    torch.testing.assert_close(out[10:12], (first[10:] + middle[5:7] + last[:2]) / 3, rtol=0, atol=1e-5)
    torch.testing.assert_close(out[17:], last[7:], rtol=0, atol=1e-5)


def test_describe_names_model_weights_and_tail(tiny: Path) -> None:
    teacher = protsteps.build("teacher", "esm", weights=str(tiny), cache_mb=64)
    line = teacher.describe()
    assert line == (
        f"ESM-2 tiny (3 layers, dim 32) from {tiny} (file); representation: layer 3; "
        "trainable tail: layer 3 + final layer norm; trunk cache: 64 MiB in memory"
    )


def test_rows_line_up_with_a_featurized_batch(tiny: Path, structures_dir: Path) -> None:
    """The contract the encoders rely on: row ptr[b] + i is residue i of protein b."""
    graphs = [
        *protsteps.featurize(structures_dir / "biopython" / "1A8O.cif"),
        *protsteps.featurize(structures_dir / "masif" / "1t6b_X.pdb.gz"),
        *protsteps.featurize(structures_dir / "mdanalysis" / "5PTI.cif.gz"),
    ]
    assert_rows_line_up(protsteps.build("teacher", "esm", weights=str(tiny)), graphs)
