"""Table 9 (Faster/Mask R-CNN transfer of vanilla vs ReLabel backbones (MMDetection)).

Not implemented yet: the MMDetection build (mmcv from source) and the detection configs over the world's detection set
"""
from repro.experiment import Experiment

EXPERIMENT = Experiment(
    name="table9",
    title="Faster/Mask R-CNN transfer of vanilla vs ReLabel backbones (MMDetection)",
    paper_ref="Table 9",
    missing="the MMDetection build (mmcv from source) and the detection configs over the world's detection set",
)
