"""Small random ProtBert look-alikes, written the way real ProtBert folders are.

:func:`write_protbert` builds transformers' own ``BertForMaskedLM`` (what Rostlab/prot_bert
is) with ProtBert's real 30-token vocabulary and random weights, and saves it with
``save_pretrained`` together with a ``BertTokenizer`` made from a ``vocab.txt``, so that
tests and benchmarks load it through exactly the path real weights take
(``protsteps.build("teacher", "protbert", weights=folder)``). With
``num_layers=30, hidden_size=1024, attention_heads=16, intermediate_size=4096,
max_positions=40000`` it has ProtBert's architecture.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PROTBERT_VOCAB", "write_protbert"]

#: Rostlab/prot_bert's vocab.txt, in order (token id = position)
PROTBERT_VOCAB: tuple[str, ...] = (
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "L", "A", "G", "V", "E", "S", "I", "K", "R", "D", "T", "P", "N", "Q", "F",
    "Y", "M", "H", "C", "W", "X", "U", "B", "Z", "O",
)  # fmt: skip


def write_protbert(
    folder: str | os.PathLike[str],
    *,
    num_layers: int = 3,
    hidden_size: int = 32,
    attention_heads: int = 4,
    intermediate_size: int = 64,
    max_positions: int = 1024,
    dropout: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write a random BERT masked-language model with ProtBert's vocabulary into ``folder``
    (``config.json``, the weights, ``vocab.txt`` and the tokenizer files) and return it.

    ``dropout`` sets the hidden and attention dropout rates (ProtBert's are 0); the caller's
    random state is left untouched.
    """
    import torch
    import transformers
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    from ._loading import _quiet

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(PROTBERT_VOCAB) + "\n")
    config = BertConfig(
        vocab_size=len(PROTBERT_VOCAB),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=attention_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    with _quiet(transformers):
        model.save_pretrained(folder)
        BertTokenizer(str(vocab), do_lower_case=False).save_pretrained(folder)
    return folder
