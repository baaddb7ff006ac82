"""Choices are Literal aliases; their values and run-time checks come from them."""

from __future__ import annotations

from typing import Literal

import pytest

from desweep.choices import check_choice, literal_values
from desweep.errors import DesweepInputError


def test_literal_values_in_the_order_written():
    assert literal_values(Literal["shared", "scvi"]) == ("shared", "scvi")
    with pytest.raises(TypeError):
        literal_values(str)


def test_a_bad_choice_is_one_line_listing_the_valid_values():
    from desweep.compute import Accelerator, resolve_accelerator

    check_choice("cpu", Accelerator, source="--accelerator", field="accelerator")
    with pytest.raises(DesweepInputError) as err:
        resolve_accelerator("tpu")
    assert str(err.value) == "--accelerator: accelerator: must be one of auto, cpu, gpu, got 'tpu'"
