#!/usr/bin/env python3
"""How findings are told: one per planted root cause, replays that agree, small reproducers.

Each control has a known number of planted root causes.  For each control and
each corpus, the bench runs ``tlsleak check CONTROL CORPUS --out DIR`` (with
``--fail-alloc`` where the bug hides behind a failed allocation), then
``tlsleak replay`` on every stored finding folder, and prints:

* distinct findings per kind, against the planted causes (goal: exactly one
  finding per cause, and none on the fixed controls);
* replay agreement: the share of stored folders whose replay says "still
  there" (goal: 100%);
* the median size of the reproducers against the median size of the cases
  they were found on.

Corpora: the bundled one, and a real-world one assembled here from what the
package registries ship: the Mozilla CA certificates of Debian's
ca-certificates (``/usr/share/ca-certificates``) and the X.509 and key vectors
of pyca's ``cryptography-vectors`` (``pip install cryptography-vectors``; a
deterministic sample of --vectors files), each imported as the CA, the
certificate or the key of an otherwise valid case.  Nothing is asserted.

    python bench/bench_verdicts.py [--vectors N] [--minimize-budget N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TLSLEAK = [sys.executable, "-m", "tlsleak.cli"]


@dataclass(frozen=True)
class Control:
    name: str
    target: str  # a built-in target, or "c:<source in tests/c>[:-Dflag]"
    #: Planted root causes per finding kind (empty: a fixed control).
    planted: dict[str, int]
    fail_alloc: bool = False


CONTROLS = [
    Control("leaky C", "c:control_leaky.c", {"leak": 1}),
    Control("leaky Python", "control-leaky", {"leak": 1}),
    Control("SSL_new failure C", "c:control_sslnew.c", {"leak": 1}, fail_alloc=True),
    # One missing ERR_clear_error behind every failing step (one per step).
    Control("keep-errors C", "c:control_fixed.c:-DCONTROL_KEEP_ERRORS", {"error-queue": 5}),
    Control("two stale causes C", "c:control_stale.c", {"error-queue": 2}),
    Control("fixed C", "c:control_fixed.c", {}),
    Control("fixed Python", "control-fixed", {}),
]


def _build(spec: str, workdir: Path) -> str:
    if not spec.startswith("c:"):
        return spec
    source, _, flag = spec[2:].partition(":")
    out = workdir / (Path(source).stem + (flag.replace("-D", "_") if flag else "") + ".so")
    flags = [flag] if flag else []
    command = ["gcc", "-shared", "-fPIC", "-O1", *flags, "-o", str(out)]
    subprocess.run([*command, str(ROOT / "tests/c" / source), "-lssl", "-lcrypto"], check=True)
    return f"c:{out}"


def _sample(files: list[Path], n: int) -> list[Path]:
    # By hash of the name: the same sample on every machine and every run.
    return sorted(files, key=lambda p: hashlib.sha256(p.name.encode()).digest())[:n]


def _vector_files(n: int) -> dict[str, list[Path]]:
    try:
        import cryptography_vectors  # type: ignore[import-not-found]
    except ImportError:
        print("(cryptography-vectors not installed: pip install cryptography-vectors)")
        return {}
    base = Path(cryptography_vectors.__file__).parent
    certs = [p for p in (base / "x509").rglob("*") if p.suffix in {".pem", ".der", ".crt"}]
    keys = [
        p
        for sub in ("PKCS8", "PEM_Serialization", "DER_Serialization", "RSA", "EC", "DSA")
        for p in (base / "asymmetric" / sub).rglob("*")
        if p.is_file() and p.suffix in {".pem", ".der", ".key"}
    ]
    return {"cert": _sample(certs, n), "key": _sample(keys, n)}


def real_world_corpus(into: Path, vectors: int) -> Path:
    """Assemble the real-world corpus (CA certificates and pyca's vectors) in ``into``."""
    groups = _vector_files(vectors)
    mozilla = sorted(Path("/usr/share/ca-certificates/mozilla").glob("*.crt"))
    if mozilla:
        groups["ca"] = _sample(mozilla, vectors)
    for field, files in groups.items():
        with tempfile.TemporaryDirectory() as tmp:
            for i, path in enumerate(files):
                (Path(tmp) / f"{i:04d}{path.suffix}").write_bytes(path.read_bytes()[: 1 << 20])
            command = [*TLSLEAK, "corpus", "import", "--as", field, "--with-material"]
            subprocess.run([*command, "--into", str(into), tmp], check=True, capture_output=True)
    return into


def _tlsleak(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TLSLEAK, *args], capture_output=True, text=True, check=False)


def measure(control: Control, target: str, corpus: Path, out: Path, budget: int) -> str:
    out.mkdir(parents=True)
    report = out / "report.json"
    args = ["check", target, str(corpus), "--out", str(out), "--json", str(report), "-q"]
    args += ["--minimize-budget", str(budget)]
    if control.fail_alloc:
        args += ["--fail-alloc", "--fail-budget", "16"]
    done = _tlsleak(*args)
    if done.returncode not in (0, 1):
        return f"check failed ({done.returncode}): {done.stderr.strip()[-200:]}"
    findings = json.loads(report.read_text())["findings"]
    kinds = Counter(f["kind"] for f in {f["signature"]: f for f in findings}.values())
    folders = sorted(p for p in (out / "findings").iterdir() if p.is_dir())
    agree = sum(_tlsleak("replay", str(folder)).returncode == 1 for folder in folders)
    sizes = [len((f / "reproducer").read_bytes()) for f in folders]
    originals = [len((f / "original").read_bytes()) for f in folders]
    per_cause = ", ".join(
        f"{kind} {kinds.get(kind, 0)}/{n}" for kind, n in control.planted.items()
    )
    extra = {k: v for k, v in kinds.items() if k not in control.planted}
    return (
        f"findings/planted: {per_cause or 'none planted'}"
        + (f", unplanted {dict(extra)}" if extra else "")
        + f" | replay agrees {agree}/{len(folders)}"
        + (
            f" | median reproducer {statistics.median(sizes):.0f} B"
            f" (found on {statistics.median(originals):.0f} B)"
            if sizes
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=60, help="files per kind sampled")
    parser.add_argument("--minimize-budget", type=int, default=100)
    args = parser.parse_args()
    from tlsleak.cases.files import bundled_corpus

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpora = {
            "bundled": bundled_corpus(),
            "real-world": real_world_corpus(work / "real-world", args.vectors),
        }
        for name, corpus in corpora.items():
            print(f"{name} corpus: {sum(1 for p in corpus.iterdir() if p.is_file())} cases")
        for control in CONTROLS:
            target = _build(control.target, work)
            for name, corpus in corpora.items():
                out = work / f"out-{control.name.replace(' ', '-')}-{name}"
                line = measure(control, target, corpus, out, args.minimize_budget)
                print(f"{control.name:<20} {name:<11} {line}", flush=True)


if __name__ == "__main__":
    main()
