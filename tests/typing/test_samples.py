"""Run the typing samples, so the types they pin are the ones the packages return."""

from __future__ import annotations

from tests.typing import downstream_sample, ereps_sample


def test_downstream_sample_runs() -> None:
    downstream_sample.main()


def test_ereps_sample_runs() -> None:
    ereps_sample.main()


def test_downstream_unet_sample_runs() -> None:
    downstream_sample.unet_types()
