"""Shared test fixtures: one tiny ImageNet-layout installation and a label-map store of its training images."""
from __future__ import annotations

import pytest

from tests.fixtures import build_imagenet, build_labelmaps


@pytest.fixture(scope="session")
def imagenet(tmp_path_factory):
    return build_imagenet(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="session")
def labelmaps(imagenet, tmp_path_factory):
    return build_labelmaps(imagenet, tmp_path_factory.mktemp("labelmaps") / "store")
