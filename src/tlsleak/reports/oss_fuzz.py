"""An OSS-Fuzz / ClusterFuzzLite kit for one target (``tlsleak oss-fuzz``).

OSS-Fuzz and ClusterFuzzLite run Python fuzzers with leak detection off;
this kit gives them tlsleak's oracle as the fuzzer instead, so that a leak in
the target's error paths is a crash there.  Written into a new folder, to be
copied into the user's repository (docs/oss-fuzz.md):

``.clusterfuzzlite/``
    ``project.yaml`` (``language: python``), a ``Dockerfile`` on OSS-Fuzz's
    Python builder image that installs tlsleak, ``build.sh`` that installs
    the project and builds the fuzzer with ``compile_python_fuzzer``, the
    fuzzer script (:mod:`tlsleak.fuzz.entry` with the target fixed), its seed
    corpus (every bundled case, zipped) and its dictionary (``tls.dict``).
``.github/workflows/``
    ClusterFuzzLite's pull-request (``code-change``) and daily (``batch``)
    workflows.

The folder is written whole or not at all, and only where nothing is yet
(:func:`tlsleak.reports._export_write.write_export`).
"""

from __future__ import annotations

import io
import json
import re
import shlex
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from tlsleak._version import __version__
from tlsleak.cases.files import bundled_corpus, case_files
from tlsleak.reports import _oss_fuzz_templates as templates
from tlsleak.reports._export_write import ExportError, write_export
from tlsleak.targets import TARGETS

__all__ = [
    "KIT_FOLDER",
    "KIT_TARGETS",
    "WORKFLOWS",
    "Kit",
    "KitError",
    "plan",
    "render",
    "write_kit",
]

#: Where ClusterFuzzLite looks for a project's build files.
KIT_FOLDER: Final = ".clusterfuzzlite"
#: Where GitHub looks for workflows.
WORKFLOWS: Final = ".github/workflows"
#: The built-in targets a kit takes: those whose ledgers count without a library
#: preloaded before the process starts.  ``ssl``, ``mbedtls``, ``grpc`` and
#: ``mongoose`` are seen by the heap ledgers only, which need tlsleak's heap
#: library in ``LD_PRELOAD``, and OSS-Fuzz's runner preloads its sanitizer.
KIT_TARGETS: Final = ("pyopenssl", "control-leaky", "control-fixed")
_DOTTED: Final = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_CALLABLE: Final = re.compile(rf"({_DOTTED}):({_DOTTED})")
# A zip entry's time: fixed, so that the same corpus gives the same bytes.
_ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)


class KitError(ExportError):
    """A kit that can't be made or written; the message is one line."""


@dataclass(frozen=True)
class Kit:
    """What a kit is for: the target, the fuzzer's name and the project's folder in the image."""

    target: str
    fuzzer: str
    project: str
    #: The tlsleak requirement the Dockerfile installs.
    requirement: str
    #: Extra PyInstaller arguments: a user callable's package, collected whole.
    pyinstaller: tuple[str, ...] = ()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def plan(target: str, project: str) -> Kit:
    """The kit for ``target`` (:data:`KIT_TARGETS` or ``package.module:function``) in ``project``.

    The target is not imported: the kit is for the image the project is
    installed in, which need not be this environment (``build.sh`` makes it
    there, so that a typo fails the build).  ``c:`` libraries are refused:
    the image would have to build them first.
    """
    pyinstaller: tuple[str, ...] = ()
    if target in KIT_TARGETS:
        pass
    elif target in TARGETS:
        raise KitError(
            f"{target}: its ledgers need tlsleak's heap library preloaded (LD_PRELOAD), "
            "which an OSS-Fuzz runner does not do (it preloads its sanitizer); kits take "
            f"{', '.join(KIT_TARGETS)} or package.module:function"
        )
    elif target.startswith("c:"):
        raise KitError(
            f"{target}: a c: library is not supported by oss-fuzz kits (the image would "
            "have to build it); give a Python binding of it as package.module:function"
        )
    elif match := _CALLABLE.fullmatch(target):
        module = match.group(1)
        # PyInstaller cannot see a module tlsleak imports by name: named here.
        pyinstaller = ("--collect-all", module.split(".", 1)[0], "--hidden-import", module)
    else:
        raise KitError(
            f"unknown target {target!r} (built in: {', '.join(TARGETS)}; "
            "or give your own as package.module:function)"
        )
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", project).strip("-.")
    if not name:
        raise KitError(f"{project!r} is not a usable project name: give --project NAME")
    return Kit(
        target=target,
        fuzzer=f"tlsleak_{_slug(target)}_fuzzer",
        project=name,
        requirement=f"tlsleak=={__version__}",
        pyinstaller=pyinstaller,
    )


def seed_corpus_zip(folder: Path | None = None) -> bytes:
    """Every case file of ``folder`` (default: the bundled corpus) at the root of a zip."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in case_files([folder or bundled_corpus()]):
            info = zipfile.ZipInfo(path.name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return out.getvalue()


def dictionary() -> bytes:
    """tlsleak's libFuzzer dictionary of PEM armor and DER prefixes (``tls.dict``)."""
    return resources.files("tlsleak.fuzz").joinpath("tls.dict").read_bytes()


def render(kit: Kit) -> dict[str, bytes]:
    """The kit's files: path inside the folder -> bytes."""
    fields = {
        "@TARGET@": kit.target,
        "@VERSION@": __version__,
        "@FUZZER@": kit.fuzzer,
        "@PROJECT@": kit.project,
        "@REQUIREMENT@": shlex.quote(kit.requirement),
        "@TARGET_SH@": shlex.quote(kit.target),
        "@TARGET_PY@": json.dumps(kit.target),
        "@PYINSTALLER@": "".join(f" {shlex.quote(arg)}" for arg in kit.pyinstaller),
    }

    def fill(template: str) -> bytes:
        for key, value in fields.items():
            template = template.replace(key, value)
        return template.encode()

    base = f"{KIT_FOLDER}/{kit.fuzzer}"
    return {
        f"{KIT_FOLDER}/project.yaml": fill(templates.PROJECT_YAML),
        f"{KIT_FOLDER}/Dockerfile": fill(templates.DOCKERFILE),
        f"{KIT_FOLDER}/build.sh": fill(templates.BUILD_SH),
        f"{base}.py": fill(templates.FUZZER),
        f"{base}_seed_corpus.zip": seed_corpus_zip(),
        f"{base}.dict": dictionary(),
        f"{WORKFLOWS}/cflite_pr.yml": fill(templates.PR_WORKFLOW),
        f"{WORKFLOWS}/cflite_batch.yml": fill(templates.BATCH_WORKFLOW),
    }


def write_kit(target: str, into: Path, *, project: str | None = None) -> Kit:
    """Write the kit for ``target`` into the new folder ``into``; raises :class:`KitError`.

    ``project`` names the project's folder in the image (default: the current
    folder's name, as the kit is made from the project's checkout).
    """
    kit = plan(target, project if project is not None else Path.cwd().name)
    # write_export's own refusal speaks of exports and --force: not this command's words.
    if into.is_dir() and any(into.iterdir()):
        raise KitError(f"{into}: exists and is not empty: write the kit into a new folder")
    files = render(kit)
    try:
        write_export(into, files)
    except ExportError as exc:
        raise KitError(str(exc)) from None
    return kit
