"""The README's property-test example runs as written (docs that drift are a bug)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_property_example_passes() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "assert_no_leaks" in b)
    namespace: dict[str, Any] = {}
    exec(compile(example, str(README), "exec"), namespace)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pyOpenSSL X509 objects
        namespace["test_init_keeps_every_count_at_baseline"]()
