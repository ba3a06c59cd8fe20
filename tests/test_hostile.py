"""Hostile and careless input (issue 12): every case fails with an OptLensError, fast, naming what is wrong."""

import logging

import pytest

import opt_lens
from opt_lens import memory


# --- OPT_LENS_MEMORY_LIMIT_MB -------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["inf", "1e400", "-inf", "nan", "-1", "0", "1e303", "lots"])
def test_a_memory_limit_that_is_not_a_positive_finite_number_is_ignored_with_a_warning(value, monkeypatch, caplog):
    monkeypatch.setenv(memory.LIMIT_ENV, value)
    with caplog.at_level(logging.WARNING, logger="opt_lens.memory"):
        limit, source = memory.memory_limit()
    assert memory.LIMIT_ENV not in source and limit >= 2**26  # the detected limit: this machine has 64 MB or more
    assert any(repr(value) in record.getMessage() for record in caplog.records)


def test_a_positive_memory_limit_is_used_as_given(monkeypatch, caplog):
    monkeypatch.setenv(memory.LIMIT_ENV, "0.5")
    with caplog.at_level(logging.WARNING, logger="opt_lens.memory"):
        assert memory.memory_limit() == (2**19, f"{memory.LIMIT_ENV}=0.5")
    assert not caplog.records


# --- Names ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name",
    ["x" * 256, "a/" + "x" * 300, "x" * 5000, "gpt2\x00", "\ud800"],
    ids=["256 characters", "a 300-character part", "5000 characters", "NUL", "lone surrogate"],
)
def test_names_the_file_system_cannot_take_get_a_clear_error(name):
    with pytest.raises(opt_lens.OptLensError) as error:
        opt_lens.load(name)  # local folders allowed: the name reaches the file system
    message = str(error.value)
    assert len(message) < 200
    message.encode("utf-8")  # a message a browser can be sent: no lone surrogate echoed back
