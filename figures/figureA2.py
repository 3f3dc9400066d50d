"""Figure A2 (label-map heatmaps of the top-1 and top-2 classes).

Not implemented yet: the heatmap figure over world images and real photographs
"""
from repro.experiment import Experiment

EXPERIMENT = Experiment(
    name="figureA2",
    title="label-map heatmaps of the top-1 and top-2 classes",
    paper_ref="Figure A2",
    missing="the heatmap figure over world images and real photographs",
)
