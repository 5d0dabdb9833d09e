"""Entry point of the built-in plugin ``bilevel`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl

from .joint import JointConfig, JointScheme
from .pseudo_bilevel import PseudoBilevelConfig, PseudoBilevelScheme


@hookimpl
def protsteps_register_schemes() -> list[Component]:
    return [
        Component(
            name="joint",
            factory=JointScheme,
            config=JointConfig,
            description="Weighted sum of the pretext losses; a teacher only provides features.",
        ),
        Component(
            name="pseudo_bilevel",
            factory=PseudoBilevelScheme,
            config=PseudoBilevelConfig,
            description="STEPS: differentiable look-ahead on the teacher's tail (MI bound), outer step on the student.",
        ),
    ]
