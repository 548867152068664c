"""The suite's own settings (tests/conftest.py) hold in every test, whichever session lakes were
built before it: those are built with radflow's defaults, and must not leave them behind."""

from __future__ import annotations

import os

from conftest import SEGMENTATION_FOR_TESTS
from support.lakes import TrainedLake

from radflow.segmentation.params import SegmentationParams


def test_the_suites_settings_outlive_the_session_lakes(trained: TrainedLake) -> None:
    names = [*SEGMENTATION_FOR_TESTS, "RADFLOW_STAGE_TAGS", "RADFLOW_PREPROCESS__ROI_SOURCES"]
    assert {n: n in os.environ for n in names} == dict.fromkeys(names, True)
    assert trained.settings.train.segmentation == SegmentationParams()  # built with the defaults
