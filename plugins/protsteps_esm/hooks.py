"""Entry point of the built-in plugin ``esm`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl


@hookimpl
def protsteps_register_teachers() -> list[Component]:
    from ._config import ESMConfig
    from ._factory import build_esm_teacher

    return [
        Component(
            name="esm",
            factory=build_esm_teacher,
            config=ESMConfig,
            description="ESM-2 protein language model (fair-esm) with a trainable tail and a frozen-trunk cache",
            capabilities=lambda config: ["tail"] if config.trainable_layers > 0 else [],
            auto=0,  # teacher = "auto" tries ESM-2 8M first
        )
    ]
