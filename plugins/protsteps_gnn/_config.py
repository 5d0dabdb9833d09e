"""Settings every built-in encoder shares: how node inputs are made."""

from __future__ import annotations

import dataclasses

from protsteps import option

from .features import AngleEncoding, AngleSet, NodeInput, ResidueFeatures

#: the widest layer a built-in encoder or head accepts (ESM-2 15B is 5,120 wide)
MAX_WIDTH = 16_384
#: the deepest stack of layers a built-in encoder accepts
MAX_LAYERS = 1_000


@dataclasses.dataclass
class NodeInputConfig:
    """How residues become input vectors (see :mod:`protsteps_gnn.features`)."""

    residue_features: ResidueFeatures = option(
        "one_hot",
        "Without a teacher: encode the residue type as a one-hot vector (paper) or a learned embedding.",
    )
    residue_embedding_dim: int = option(
        32, "Width of the learned residue-type embedding.", minimum=1, maximum=MAX_WIDTH
    )
    angle_basis: int = option(
        16, "Gaussians per dihedral over [-pi, pi) in the angle encoding (>= 2).", minimum=2, maximum=1024
    )
    angle_encoding: AngleEncoding = option(
        "periodic",
        "periodic: radians as sin/cos plus periodic Gaussians; paper: the released code's "
        "degrees/180 through Gaussians exp(-10 (a - c)^2) centred over [-pi, pi] (use angle_basis = 128).",
    )
    angles: AngleSet = option(
        "phi_psi",
        "Dihedrals in the angle encoding (the paper used phi and psi); 'none': no angle input "
        "(dihedrals change sign in a mirror image).",
    )

    def __post_init__(self) -> None:
        if self.angle_basis < 2:
            raise ValueError(f"angle_basis must be >= 2, got {self.angle_basis}")
        if self.residue_embedding_dim < 1:
            raise ValueError(f"residue_embedding_dim must be >= 1, got {self.residue_embedding_dim}")


def node_input(config: NodeInputConfig, teacher_dim: int | None) -> NodeInput:
    return NodeInput(
        teacher_dim=teacher_dim,
        residue_features=config.residue_features,
        residue_embedding_dim=config.residue_embedding_dim,
        angle_basis=config.angle_basis,
        angles=config.angles,
        angle_encoding=config.angle_encoding,
    )
