"""Hypothesis's plug-in points: the ``hypothesis`` entry point and the statistics events.

The entry point is only read by a fresh interpreter importing Hypothesis, so
those tests run one (``HYPOTHESIS_NO_PLUGINS=1``, which makes Hypothesis skip
every entry point, is the negative control); the events are read back from
``pytest --hypothesis-show-statistics`` as a user would.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import find, settings
from hypothesis import strategies as st

from tlsleak.cases.case import InitCase, Step
from tlsleak.cases.defects import DEFECTS
from tlsleak.cases.hooks import note, note_outcome, quiet
from tlsleak.cases.mutator import OPERATIONS

# Draws st.from_type(InitCase) in a fresh interpreter and says what came out,
# and what importing Hypothesis alone had imported.
_FROM_TYPE = """
import json, sys
import hypothesis
loaded = sorted(m for m in ("tlsleak.cases.case", "tlsleak.cases.strategies", "cryptography")
                if m in sys.modules)
from hypothesis import HealthCheck, given, settings, strategies as st
from tlsleak import InitCase
labels = []

@settings(max_examples=60, database=None, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(st.from_type(InitCase))
def collect(case):
    labels.append(list(case.labels))

try:
    collect()
    error = ""
except Exception as e:
    error = repr(e)
strategy = repr(st.from_type(InitCase))
print(json.dumps({"loaded": loaded, "labels": labels, "error": error, "strategy": strategy}))
"""


def _from_type(**env: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _FROM_TYPE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_hypothesis_entry_point_is_installed() -> None:
    hooks = [e.value for e in importlib.metadata.entry_points(group="hypothesis")]
    assert "tlsleak.cases.hooks:_hypothesis_setup_hook" in hooks


def test_from_type_draws_tlsleak_cases_and_importing_hypothesis_stays_light() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_NO_PLUGINS"}
    result = _from_type(**env)
    assert not result["error"]
    # The hook ran (it imported the case model) but deferred the strategies
    # and their cryptography-backed material to the first draw.
    assert result["loaded"] == ["tlsleak.cases.case"]
    labels = [label for case in result["labels"] for label in case]
    assert [] in result["labels"]  # valid cases
    assert labels
    assert set(labels) <= set(DEFECTS)  # malformed ones, named by the catalogue


def test_without_plugins_from_type_is_hypothesis_own_guess() -> None:
    # Negative control: without entry points Hypothesis builds the dataclass
    # from random bytes and text (and trips on fail_alloc=0), so the test
    # above really sees the hook's registration.
    result = _from_type(HYPOTHESIS_NO_PLUGINS="1")
    assert "tlsleak.cases.case" not in result["loaded"]
    assert result["strategy"].startswith("builds(InitCase")
    labels = {label for case in result["labels"] for label in case}
    assert result["error"] or labels - set(DEFECTS)


def test_events_outside_a_hypothesis_test_do_nothing() -> None:
    # Library use (tlsleak check, the fuzzer, a plain call) must not raise
    # Hypothesis's "Cannot record events outside of a test".
    note("defect", "none")
    note_outcome("rejected", "key")
    with quiet():
        note("defect", "none")


def test_the_events_module_does_not_import_hypothesis() -> None:
    code = (
        "import sys; from tlsleak.cases.hooks import note; note('outcome', 'accepted'); "
        "print('hypothesis' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"


_PROPERTY = """
from hypothesis import HealthCheck, given, settings
from tlsleak import assert_no_leaks
from tlsleak.strategies import init_cases, mutated_cases
from tlsleak.targets import resolve_target

TARGET = resolve_target("pyopenssl")
QUICK = settings(max_examples=40, derandomize=True, deadline=None,
                 suppress_health_check=list(HealthCheck))


@QUICK
@given(init_cases())
def test_run(case):
    assert_no_leaks(TARGET, case)


@QUICK
@given(mutated_cases(init_cases(), max_mutations=2))
def test_mutated(case):
    pass
"""

_EVENT = re.compile(r"^\s*\* ([\d.]+)%, tlsleak (\w+): (.+)$")


def _statistics(tmp_path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{test: {kind: {value: percent}}} from ``--hypothesis-show-statistics``."""
    (tmp_path / "test_property.py").write_text(_PROPERTY)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--hypothesis-show-statistics", "test_property.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    stats: dict[str, dict[str, dict[str, float]]] = {}
    test = ""
    for line in done.stdout.splitlines():
        if header := re.match(r"^test_property\.py::(\w+):", line):
            test = header[1]
        elif event := _EVENT.match(line):
            stats.setdefault(test, {}).setdefault(event[2], {})[event[3]] = float(event[1])
    return stats


def test_statistics_show_defects_outcomes_and_steps(tmp_path: Path) -> None:
    stats = _statistics(tmp_path)
    run, mutated = stats["test_run"], stats["test_mutated"]
    # One defect event per drawn case (max_defects=1): valid or a catalogue defect.
    assert "none" in run["defect"]
    assert set(run["defect"]) - {"none"}
    assert set(run["defect"]) <= {"none", *DEFECTS}
    assert abs(sum(run["defect"].values()) - 100) < 0.1
    # One outcome per attempt, and a step for exactly the rejected ones.
    assert {"accepted", "rejected"} <= set(run["outcome"]) <= {"accepted", "rejected", "error"}
    assert abs(sum(run["outcome"].values()) - 100) < 0.1
    assert set(run["step"]) <= set(Step)
    assert abs(sum(run["step"].values()) - run["outcome"]["rejected"]) < 0.1
    # Mutations are events too; the crossover partners they draw are not
    # counted, so every case still has exactly one defect event.
    assert mutated["mutation"]
    # Named as in the case's labels (mutated:NAME): an operation, or a blob's
    # PEM or DER mutation.
    assert {name.split(":")[0] for name in mutated["mutation"]} <= {*OPERATIONS, "pem", "der"}
    assert abs(sum(mutated["defect"].values()) - 100) < 0.1
    assert "outcome" not in mutated  # nothing was run


def test_the_docs_from_type_example_draws_tlsleak_cases() -> None:
    # docs/hypothesis.md's first example, run as written (docs that drift are a bug).
    docs = Path(__file__).resolve().parents[2] / "docs" / "hypothesis.md"
    block = re.findall(r"```python\n(.*?)```", docs.read_text(), re.S)[0]
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    # dont_inherit: not this module's "from __future__ import annotations".
    exec(compile(block, str(docs), "exec", dont_inherit=True), namespace)
    namespace["test_listener_starts_or_refuses_cleanly"]()
    listener = find(
        st.builds(namespace["Listener"], port=st.integers(1024, 65535)),
        lambda listener: bool(listener.tls.labels),
        settings=settings(database=None, deadline=None),
    )
    assert isinstance(listener.tls, InitCase)
    assert set(listener.tls.labels) <= set(DEFECTS)
