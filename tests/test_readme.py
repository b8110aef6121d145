"""The README's Python examples run as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if README.exists() \
    else []


@pytest.mark.skipif(not BLOCKS, reason="README.md not next to tests/ (installed elsewhere)")
def test_readme_python_blocks_run():
    namespace = {}
    for block in BLOCKS:  # later blocks may use names from earlier ones, as a reader would
        exec(compile(block, str(README), "exec"), namespace)
    assert "gm" in namespace
