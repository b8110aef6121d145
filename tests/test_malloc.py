"""gmcore._malloc: the glibc heap tuning that ``import gmcore`` applies, and its opt-outs."""
import os
import subprocess
import sys

import pytest

from gmcore import _malloc

GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None


def _tune_in_child(**env):
    code = "import gmcore._malloc as m; print(m.tune())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout
    return out.strip() == "True"


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tune_takes_effect_on_glibc():
    assert _malloc.tune() is True


def test_opt_outs_are_honoured():
    assert _tune_in_child(GMCORE_MALLOC_TUNING="0") is False
    assert _tune_in_child(MALLOC_MMAP_THRESHOLD_="65536") is False   # the user's own choice wins
