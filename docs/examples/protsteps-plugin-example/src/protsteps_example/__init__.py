"""An example protsteps plugin: a sequence-window encoder, a masked residue-type task, a
scheme that ramps task weights in, and one of each extension: a cosine head, a class-folders
label format, a balanced-accuracy metric, a TSV embeddings writer, a loss-summary callback
and a ``sequences`` command."""

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
