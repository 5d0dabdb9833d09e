"""Built-in protsteps plugin: optimisation schemes (joint, and STEPS' pseudo bi-level)."""

from .joint import JointConfig, JointScheme
from .mi import Critic, jensen_shannon_loss
from .pseudo_bilevel import BilevelObjective, PseudoBilevelConfig, PseudoBilevelScheme

__all__ = [
    "BilevelObjective",
    "Critic",
    "JointConfig",
    "JointScheme",
    "PseudoBilevelConfig",
    "PseudoBilevelScheme",
    "jensen_shannon_loss",
]
