"""An example protsteps plugin: a sequence-window encoder and a masked residue-type task."""

from .encoder import SequenceCNN, SequenceCNNConfig
from .task import ResidueTypeConfig, ResidueTypeTask

__all__ = ["ResidueTypeConfig", "ResidueTypeTask", "SequenceCNN", "SequenceCNNConfig"]
