"""Shared test fixtures: one tiny ImageNet-layout installation, a label-map store of its training images, and
every experiment at smoke (for the slow tests)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from tests.fixtures import build_imagenet, build_labelmaps


@pytest.fixture(scope="session")
def imagenet(tmp_path_factory):
    return build_imagenet(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="session")
def labelmaps(imagenet, tmp_path_factory):
    return build_labelmaps(imagenet, tmp_path_factory.mktemp("labelmaps") / "store")


class SmokeResults(NamedTuple):
    runs: Path
    results: Path
    metrics: dict  # the regression record's view of them: {experiment: {"key | metric": value}}


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> SmokeResults:
    """Every implemented experiment at smoke, seed 0, computed once for the slow tests that read it (the regression
    record, the report in a browser)."""
    from tests.regression.record import smoke_metrics

    root = tmp_path_factory.mktemp("smoke")
    return SmokeResults(root / "runs", root / "results", smoke_metrics(root / "runs", root / "results"))
