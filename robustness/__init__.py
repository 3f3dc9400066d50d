"""Experiment modules: one per paper table or figure, found by repro.experiment.discover."""
