"""A sequence-window encoder: what a structure-aware encoder should beat."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from protsteps import ALPHABET, Batch, BuildContext, Encoder, EncoderOutput, option
from protsteps.scatter import scatter_mean


@dataclasses.dataclass
class SequenceCNNConfig:
    hidden_dim: int = option(128, "Width of the residue embeddings.")
    kernel_size: int = option(5, "Residues in each window (odd).")
    layers: int = option(2, "Number of residual window layers.")

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {self.kernel_size}")


class SequenceCNN(Encoder):
    """Residual convolutions over windows of ``kernel_size`` consecutive residues.

    h^{l+1}_i = h^l_i + ReLU(W^l [h^l_{i-k}; ...; h^l_{i+k}]), windows cut at chain ends (the
    batch's proteins never see each other). Input: the teacher's features when a teacher is
    present, else a learned residue-type embedding. Output: ``node`` [N, hidden_dim] and
    ``graph`` [B, hidden_dim] (mean over residues).
    """

    requires = frozenset({"residue_type"})

    def __init__(self, config: SequenceCNNConfig, context: BuildContext) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.hidden_dim
        if context.teacher_dim:
            self.embed: nn.Module = nn.Linear(context.teacher_dim, config.hidden_dim)
        else:
            self.embed = nn.Embedding(len(ALPHABET), config.hidden_dim)
        self.windows = nn.ModuleList(
            nn.Linear(config.hidden_dim * config.kernel_size, config.hidden_dim) for _ in range(config.layers)
        )

    def forward(self, batch: Batch, teacher_features: Tensor | None = None) -> EncoderOutput:
        if isinstance(self.embed, nn.Linear):
            if teacher_features is None:
                raise ValueError("this encoder was built for a teacher; pass teacher_features")
            h = self.embed(teacher_features)
        else:
            h = self.embed(batch.residue_type)
        n = h.shape[0]
        half = self.config.kernel_size // 2
        offsets = torch.arange(-half, half + 1, device=h.device)
        neighbour = torch.arange(n, device=h.device).unsqueeze(1) + offsets  # [N, k]
        inside = (neighbour >= 0) & (neighbour < n)
        neighbour = neighbour.clamp(0, max(n - 1, 0))
        same_protein = batch.batch[neighbour] == batch.batch.unsqueeze(1)
        keep = (inside & same_protein).unsqueeze(-1).to(h.dtype)  # [N, k, 1]
        for window in self.windows:
            h = h + torch.relu(window((h[neighbour] * keep).flatten(1)))
        return EncoderOutput(node=h, graph=scatter_mean(h, batch.batch, batch.num_graphs))
