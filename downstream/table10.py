"""Table 10 (multi-label classification with LabelPooling: vanilla, machine and oracle label maps).

Not implemented yet: multi-label training with binary cross-entropy and mask-derived oracle label maps
"""
from repro.experiment import Experiment

EXPERIMENT = Experiment(
    name="table10",
    title="multi-label classification with LabelPooling: vanilla, machine and oracle label maps",
    paper_ref="Table 10",
    missing="multi-label training with binary cross-entropy and mask-derived oracle label maps",
)
