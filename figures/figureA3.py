"""Figure A3 (training images with a random crop, the original label and the pooled ReLabel label).

Not implemented yet: the crop gallery
"""
from repro.experiment import Experiment

EXPERIMENT = Experiment(
    name="figureA3",
    title="training images with a random crop, the original label and the pooled ReLabel label",
    paper_ref="Figure A3",
    missing="the crop gallery",
)
