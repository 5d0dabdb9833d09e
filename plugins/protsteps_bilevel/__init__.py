"""Built-in protsteps plugin: optimisation schemes (joint, and STEPS' pseudo bi-level)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protsteps._lazy import lazy_names

if TYPE_CHECKING:
    from .joint import JointConfig, JointScheme
    from .mi import Critic, jensen_shannon_loss
    from .pseudo_bilevel import BilevelObjective, PseudoBilevelConfig, PseudoBilevelScheme

#: public name -> the module that defines it, imported on first use: the plugin's entry
#: point (``.hooks``) imports this package, and registering must not import torch
_WHERE = {
    "JointConfig": ".joint",
    "JointScheme": ".joint",
    "Critic": ".mi",
    "jensen_shannon_loss": ".mi",
    "BilevelObjective": ".pseudo_bilevel",
    "PseudoBilevelConfig": ".pseudo_bilevel",
    "PseudoBilevelScheme": ".pseudo_bilevel",
}

__all__ = [
    "BilevelObjective",
    "Critic",
    "JointConfig",
    "JointScheme",
    "PseudoBilevelConfig",
    "PseudoBilevelScheme",
    "jensen_shannon_loss",
]


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
