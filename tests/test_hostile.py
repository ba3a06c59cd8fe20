"""Hostile and careless input (issue 12): every case fails with an OptLensError, fast, naming what is wrong."""

import pytest

import opt_lens


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
