"""The frozen-trunk cache: the cached path equals a full forward, in memory and on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import protsteps
from protsteps_esm import ESMTeacher, TrunkCache, TrunkKey, normalize_sequence
from protsteps_esm.testing import structure_sequences, write_esm2_checkpoint

REAL = (
    ("masif/1t6b_X.pdb.gz", "X"),
    ("biopython/1A8O.cif", "A"),
    ("mdanalysis/5PTI.cif.gz", "A"),
    ("db55_unbound/1HE8_r_u.pdb.gz", "A"),
    ("db55_unbound/1AK4_l_u.pdb.gz", "A"),
)


#: tiny models: see the ``one_thread`` fixture
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_esm2_checkpoint(
        tmp_path_factory.mktemp("esm") / "tiny.pt", num_layers=3, embed_dim=48, attention_heads=4
    )


@pytest.fixture(scope="module")
def sequences(structures_dir: Path) -> list[str]:
    return [structure_sequences(structures_dir / name)[chain] for name, chain in REAL]


def full_forward(teacher: ESMTeacher, sequences: list[str]) -> torch.Tensor:
    """fair-esm's ESM2.forward on one padded batch of all sequences (the uncached reference)."""
    tokens = teacher._tokens([normalize_sequence(s) for s in sequences])
    with torch.no_grad():
        rep = teacher.esm(tokens, repr_layers=[teacher.layer])["representations"][teacher.layer]
    return torch.cat([rep[b, 1 : len(s) + 1] for b, s in enumerate(sequences)])


@pytest.mark.parametrize("padded", [True, None])
def test_cached_path_equals_full_forward_across_batchings(
    tiny: Path, sequences: list[str], padded: bool | None
) -> None:
    lengths = sorted(map(len, sequences))
    assert lengths[0] < 100 and lengths[-1] > 800  # padding differs a lot between batchings
    teacher = protsteps.build("teacher", "esm", weights=str(tiny), max_tokens=2000)
    teacher.padded_groups = padded  # True: the groups accelerators run; None on CPU: alone
    assert teacher.cache is not None
    # fill the cache from batches of one composition (short chains padded together)...
    teacher(sequences[:3])
    teacher(sequences[3:])
    computed = teacher.cache.misses
    assert computed == len(sequences) and len(teacher.cache) == len(sequences)
    # ...and read it back re-padded in other compositions, in another order
    for subset in (sequences, sequences[::-1], [sequences[3], sequences[2]], [sequences[4]]):
        cached = teacher(subset)
        torch.testing.assert_close(cached, full_forward(teacher, subset), rtol=0, atol=1e-5)
    assert teacher.cache.misses == computed and teacher.cache.hits >= 12


def test_cached_states_do_not_depend_on_what_filled_the_cache(tiny: Path, sequences: list[str]) -> None:
    """Two runs sharing a cache folder must not differ by which run met a sequence first:
    a state is the same bits whatever batch it was first computed beside."""
    together = protsteps.build("teacher", "esm", weights=str(tiny), max_tokens=4000)
    apart = protsteps.build("teacher", "esm", weights=str(tiny), max_tokens=4000)
    together(sequences)  # one call: the sequences would be padded into shared batches
    for sequence in reversed(sequences):
        apart([sequence])
    assert together.cache is not None and apart.cache is not None
    for sequence in sequences:
        key = TrunkKey(
            together.model_name,
            together.trunk_fingerprint,
            together.trunk_layers,
            normalize_sequence(sequence),
        )
        assert torch.equal(together.cache.get(key), apart.cache.get(key))
    torch.testing.assert_close(together(sequences), apart(sequences), rtol=0, atol=0)


def test_cached_path_with_a_replacement_tail(tiny: Path, sequences: list[str]) -> None:
    cached = protsteps.build("teacher", "esm", weights=str(tiny), trainable_layers=2)
    plain = protsteps.build("teacher", "esm", weights=str(tiny), trainable_layers=2, cache=False)
    generator = torch.Generator().manual_seed(1)
    tail = {
        n: p + 0.01 * torch.randn(p.shape, generator=generator) for n, p in cached.tail_parameters().items()
    }
    cached(sequences)
    torch.testing.assert_close(cached(sequences, tail=tail), plain(sequences, tail=tail), rtol=0, atol=1e-5)
    assert not torch.allclose(cached(sequences, tail=tail), cached(sequences), atol=1e-3)


def test_training_the_tail_keeps_the_cache_valid(tiny: Path, sequences: list[str]) -> None:
    cached = protsteps.build("teacher", "esm", weights=str(tiny))
    plain = protsteps.build("teacher", "esm", weights=str(tiny), cache=False)
    fingerprint = cached.trunk_fingerprint
    for teacher in (cached, plain):
        optimizer = torch.optim.SGD(teacher.parameters(), lr=0.5)
        for _ in range(2):
            optimizer.zero_grad()
            teacher(sequences[:3]).square().mean().backward()
            optimizer.step()
    assert cached.cache is not None and cached.cache.misses == 3
    torch.testing.assert_close(cached(sequences[:3]), plain(sequences[:3]), rtol=0, atol=1e-5)
    torch.testing.assert_close(cached(sequences[:3]), full_forward(cached, sequences[:3]), rtol=0, atol=1e-5)
    assert cached.trunk_fingerprint == fingerprint == type(cached).trunk_fingerprint.fget(plain)


def test_disk_cache_is_shared_between_teachers(tiny: Path, sequences: list[str], tmp_path: Path) -> None:
    first = protsteps.build("teacher", "esm", weights=str(tiny), cache_dir=str(tmp_path))
    expected = first(sequences)
    files = sorted(tmp_path.rglob("*.pt"))
    assert len(files) == len(sequences)
    assert files[0].relative_to(tmp_path).parts[:3] == ("tiny", first.trunk_fingerprint[:16], "trunk2")
    second = protsteps.build("teacher", "esm", weights=str(tiny), cache_dir=str(tmp_path))
    torch.testing.assert_close(second(sequences), expected, rtol=0, atol=0)
    assert second.cache is not None
    assert (second.cache.disk_hits, second.cache.misses) == (len(sequences), 0)
    assert not list(tmp_path.rglob("*.tmp"))


def test_damaged_disk_entry_is_recomputed(tiny: Path, sequences: list[str], tmp_path: Path) -> None:
    first = protsteps.build("teacher", "esm", weights=str(tiny), cache_dir=str(tmp_path))
    expected = first(sequences[:2])
    victim = sorted(tmp_path.rglob("*.pt"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    second = protsteps.build("teacher", "esm", weights=str(tiny), cache_dir=str(tmp_path))
    torch.testing.assert_close(second(sequences[:2]), expected, rtol=0, atol=1e-6)
    assert second.cache is not None and (second.cache.disk_hits, second.cache.misses) == (1, 1)
    assert torch.load(victim, weights_only=True)["states"].shape[1] == 48  # rewritten whole


def test_other_weights_or_layers_never_share_entries(tmp_path: Path, sequences: list[str]) -> None:
    """Two files with the same name and shape but other weights, and the same weights cut
    at another layer, all in one cache folder: each gets its own entries."""
    a = write_esm2_checkpoint(tmp_path / "a" / "model.pt", num_layers=3, embed_dim=48, seed=1)
    b = write_esm2_checkpoint(tmp_path / "b" / "model.pt", num_layers=3, embed_dim=48, seed=2)
    cache_dir = tmp_path / "cache"
    teachers = [
        protsteps.build("teacher", "esm", weights=str(a), cache_dir=str(cache_dir)),
        protsteps.build("teacher", "esm", weights=str(b), cache_dir=str(cache_dir)),
        protsteps.build("teacher", "esm", weights=str(a), cache_dir=str(cache_dir), trainable_layers=2),
    ]
    assert len({t.trunk_fingerprint for t in teachers}) == 3
    for teacher in teachers:
        torch.testing.assert_close(
            teacher(sequences[:2]), full_forward(teacher, sequences[:2]), rtol=0, atol=1e-5
        )
    assert len(list(cache_dir.rglob("*.pt"))) == 6


def test_memory_budget_drops_least_recently_used() -> None:
    row = 4 * 10 * 8  # bytes of a [10, 8] float32 entry
    cache = TrunkCache(max_bytes=3 * row)
    keys = [TrunkKey("m", "f" * 64, 2, s) for s in ("A" * 8, "C" * 8, "D" * 8, "E" * 8)]
    for key in keys[:3]:
        cache.put(key, torch.ones(10, 8))
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[3], torch.ones(10, 8))
    assert keys[1] not in cache and keys[0] in cache and keys[3] in cache
    assert cache.nbytes == 3 * row and len(cache) == 3
    cache.put(TrunkKey("m", "f" * 64, 2, "W" * 100), torch.ones(102, 8))  # larger than the budget
    assert len(cache) == 3 and cache.nbytes == 3 * row


def test_entries_do_not_keep_the_padded_batch_alive() -> None:
    batch = torch.randn(50, 4, 8)
    cache = TrunkCache(max_bytes=10**6)
    key = TrunkKey("m", "f" * 64, 1, "A" * 8)
    cache.put(key, batch[:10, 1])
    stored = cache.get(key)
    assert stored is not None
    assert stored.untyped_storage().nbytes() == 10 * 8 * 4


def test_no_cache_recomputes(tiny: Path, sequences: list[str]) -> None:
    teacher = protsteps.build("teacher", "esm", weights=str(tiny), cache=False)
    assert teacher.cache is None and teacher.precompute(sequences) == 0
    cached = protsteps.build("teacher", "esm", weights=str(tiny))
    assert cached.precompute(sequences + sequences[:1]) == len(sequences)
    assert cached.precompute(sequences) == 0
    torch.testing.assert_close(cached(sequences), teacher(sequences), rtol=0, atol=1e-5)


def test_inference_mode_then_training(tiny: Path, sequences: list[str]) -> None:
    """Embedding under torch.inference_mode (evaluation) must not poison later training
    steps: neither the cached states nor fair-esm's rotary tables may be inference tensors."""
    teacher = protsteps.build("teacher", "esm", weights=str(tiny))
    with torch.inference_mode():
        evaluated = teacher(sequences[:2])
    assert teacher.cache is not None
    for sequence in sequences[:2]:
        key = TrunkKey(teacher.model_name, teacher.trunk_fingerprint, teacher.trunk_layers, sequence)
        stored = teacher.cache.get(key)
        assert stored is not None and not stored.is_inference()
    trained = teacher(sequences[:2])
    trained.square().mean().backward()
    assert all(p.grad is not None for p in teacher.tail_parameters().values())
    torch.testing.assert_close(trained.detach(), evaluated, rtol=0, atol=0)
    assert teacher.cache.hits == 4 and teacher.cache.misses == 2
