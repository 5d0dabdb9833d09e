"""Entry point of the built-in plugin ``protbert`` (group ``protsteps``)."""

from __future__ import annotations

from protsteps import Component, hookimpl


@hookimpl
def protsteps_register_teachers() -> list[Component]:
    from ._config import ProtBertConfig
    from ._factory import build_protbert_teacher

    return [
        Component(
            name="protbert",
            factory=build_protbert_teacher,
            config=ProtBertConfig,
            description="ProtBert (Hugging Face transformers), the STEPS authors' teacher, with a "
            "trainable tail and a frozen-trunk cache",
            capabilities=lambda config: ["tail"] if config.trainable_layers > 0 else [],
            # not in teacher = "auto": its weights are a 1.6 GB download
        )
    ]
