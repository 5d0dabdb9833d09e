"""Entry point of the built-in plugin ``bilevel`` (group ``protsteps``)."""

from __future__ import annotations

from importlib.resources import files

from protsteps import Component, Preset, hookimpl


@hookimpl
def protsteps_register_schemes() -> list[Component]:
    from .joint import JointConfig, JointScheme
    from .pseudo_bilevel import PseudoBilevelConfig, PseudoBilevelScheme, pseudo_bilevel_needs

    return [
        Component(
            name="joint",
            factory=JointScheme,
            config=JointConfig,
            description="Weighted sum of the pretext losses; a teacher only provides features.",
            capabilities=[],
            auto=10,  # scheme = "auto": when pseudo_bilevel's needs are not met
        ),
        Component(
            name="pseudo_bilevel",
            factory=PseudoBilevelScheme,
            config=PseudoBilevelConfig,
            description="STEPS: differentiable look-ahead on the teacher's tail (MI bound), outer step on the student.",
            capabilities=[],
            needs=pseudo_bilevel_needs,
            auto=0,  # scheme = "auto": STEPS whenever the composition allows it
        ),
    ]


@hookimpl
def protsteps_register_presets() -> list[Preset]:
    presets = files(__package__) / "presets"
    return [
        Preset.from_file(
            "default",
            "protsteps' defaults: gin, distance + dihedral, teacher and scheme auto (= no preset)",
            presets / "default.toml",
        ),
        Preset.from_file(
            "paper",
            "STEPS as the authors' released code: linear GIN, all pairs, ProtBert, batch 1, 5 epochs",
            presets / "paper.toml",
        ),
    ]
