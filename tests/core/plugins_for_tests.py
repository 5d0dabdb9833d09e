"""Small plugin objects for testing the registry and run configs without entry points.

Their components are real (tiny) objects with typed configs; they exist so that registry
behaviour can be tested independently of which built-in plugins are installed.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

import protsteps
from protsteps import Component, hookimpl, option


@dataclasses.dataclass
class LinearConfig:
    hidden_dim: int = option(16, "Width of the embedding.")
    activation: Literal["none", "relu"] = option("relu", "Nonlinearity.")
    scale: float = option(1.0, "Scale of the output.")
    weights: str | None = option(None, "Optional path.")
    layers: list[int] = option([1, 2], "Layer list.")


class LinearEncoder(torch.nn.Module):
    requires = frozenset({"residue_type", "pos"})

    def __init__(self, config: LinearConfig, context: protsteps.BuildContext) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.hidden_dim
        self.linear = torch.nn.Linear(3, config.hidden_dim)


@dataclasses.dataclass
class EmptyConfig:
    pass


class AlphaPlugin:
    @hookimpl
    def protsteps_register_encoders(self):
        return [Component("linear", LinearEncoder, LinearConfig, "A linear encoder for tests.")]

    @hookimpl
    def protsteps_register_tasks(self):
        return [
            Component("distance", lambda c, ctx: ("distance", c), EmptyConfig, "Test task."),
            Component("dihedral", lambda c, ctx: ("dihedral", c), EmptyConfig, "Test task."),
        ]

    @hookimpl
    def protsteps_register_featurizers(self):
        return [Component("residue_graph", lambda c, ctx: c, LinearConfig, "Test featurizer.")]

    @hookimpl
    def protsteps_register_schemes(self):
        return [Component("joint", lambda c, ctx: c, EmptyConfig, "Test scheme.")]


class BetaPlugin:
    @hookimpl
    def protsteps_register_encoders(self):
        return [Component("linear", LinearEncoder, LinearConfig, "Same name, other plugin.")]


class BrokenHookPlugin:
    @hookimpl
    def protsteps_register_encoders(self):
        raise RuntimeError("cannot find my weights")


class GammaPlugin:
    @hookimpl
    def protsteps_register_encoders(self):
        return [Component("gamma", LinearEncoder, LinearConfig, "Another encoder.")]


alpha = AlphaPlugin()
beta = BetaPlugin()
gamma = GammaPlugin()
