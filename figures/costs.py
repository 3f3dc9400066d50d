"""Section 3.3 (costs: label-map generation share, LabelPooling step-time share, storage).

Not implemented yet: the timing and storage accounting
"""
from repro.experiment import Experiment

EXPERIMENT = Experiment(
    name="costs",
    title="costs: label-map generation share, LabelPooling step-time share, storage",
    paper_ref="Section 3.3",
    missing="the timing and storage accounting",
)
