"""The README's property-test example runs as written (docs that drift are a bug)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_property_example_passes() -> None:
    text = README.read_text()
    match = next(
        m for m in re.finditer(r"```python\n(.*?)```", text, re.S) if "assert_no_leaks" in m[1]
    )
    # Compiled at its own line numbers, so that tracebacks, and Hypothesis
    # reading the test's source back from README.md, see the real lines.
    example = "\n" * text.count("\n", 0, match.start(1)) + match[1]
    namespace: dict[str, Any] = {}
    exec(compile(example, str(README), "exec"), namespace)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pyOpenSSL X509 objects
        namespace["test_init_keeps_every_count_at_baseline"]()
