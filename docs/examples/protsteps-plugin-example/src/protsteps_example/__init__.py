"""An example protsteps plugin: a sequence-window encoder, a masked residue-type task and a
scheme that ramps task weights in."""

from .encoder import SequenceCNN, SequenceCNNConfig
from .scheme import TaskRampConfig, TaskRampScheme
from .task import ResidueTypeConfig, ResidueTypeTask

__all__ = [
    "ResidueTypeConfig",
    "ResidueTypeTask",
    "SequenceCNN",
    "SequenceCNNConfig",
    "TaskRampConfig",
    "TaskRampScheme",
]
