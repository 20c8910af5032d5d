"""The text files of an OSS-Fuzz / ClusterFuzzLite kit (:mod:`tlsleak.reports.oss_fuzz`).

Placeholders are ``@NAME@`` rather than ``str.format`` fields: the files are
full of the braces of GitHub expressions and the dollars of shell variables.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BATCH_WORKFLOW", "BUILD_SH", "DOCKERFILE", "FUZZER", "PROJECT_YAML", "PR_WORKFLOW"]

PROJECT_YAML: Final = """\
# Written by `tlsleak oss-fuzz @TARGET@` (tlsleak @VERSION@): docs/oss-fuzz.md.
language: python
"""

DOCKERFILE: Final = """\
# Written by `tlsleak oss-fuzz @TARGET@` (tlsleak @VERSION@): docs/oss-fuzz.md.
# OSS-Fuzz's Python builder: atheris, PyInstaller and compile_python_fuzzer,
# built for its own libFuzzer and sanitizers (so atheris is not installed here).
FROM gcr.io/oss-fuzz-base/base-builder-python
# The version that wrote this kit; change the requirement to install another
# one (a wheel you copy in, a git URL).
RUN pip3 install @REQUIREMENT@
COPY . $SRC/@PROJECT@
WORKDIR $SRC/@PROJECT@
COPY .clusterfuzzlite/build.sh $SRC/
"""

BUILD_SH: Final = """\
#!/bin/bash -eu
# Written by `tlsleak oss-fuzz @TARGET@` (tlsleak @VERSION@): docs/oss-fuzz.md.
# Builds @FUZZER@: tlsleak's leak oracle on @TARGET@, as OSS-Fuzz builds
# Python fuzzers (compile_python_fuzzer: the script and what it imports in
# one PyInstaller executable in $OUT, with the seed corpus and dictionary).

cd "$SRC/@PROJECT@"
# The project itself, with this build's compiler flags for any C extension.
if [ -f pyproject.toml ] || [ -f setup.py ]; then
  pip3 install .
fi

# A target that cannot be made here fails the build, not every fuzzing run.
python3 -c 'import sys; from tlsleak.targets import resolve_target; resolve_target(sys.argv[1])' \\
  @TARGET_SH@

# tlsleak is collected whole: its targets are imported by name, and its
# corpus, dictionary and preloaded libraries are data files.  Its pytest
# plugin is not: the fuzzer never runs it, and pytest would bring in
# pkg_resources, whose PyInstaller hook fails to start on some setuptools.
compile_python_fuzzer .clusterfuzzlite/@FUZZER@.py --collect-all tlsleak \\
  --exclude-module tlsleak.pytest_plugin --exclude-module pytest \\
  --exclude-module _pytest@PYINSTALLER@
cp .clusterfuzzlite/@FUZZER@_seed_corpus.zip .clusterfuzzlite/@FUZZER@.dict "$OUT/"
"""

FUZZER: Final = '''\
#!/usr/bin/env python3
"""tlsleak's leak oracle on @TARGET@, as an OSS-Fuzz / ClusterFuzzLite fuzzer.

Written by `tlsleak oss-fuzz @TARGET@` (tlsleak @VERSION@): docs/oss-fuzz.md.
Every input is decoded as an init case and checked in-process; a resource
still live after the attempt, an entry left on OpenSSL's error queue or an
unexpected exception is raised as tlsleak.LeakError, which libFuzzer reports
as a crash (the leak detection OSS-Fuzz turns off for Python fuzzers).
Every argument is libFuzzer's; replay a crash by passing its file.
"""

import os
import sys

# What this fuzzer is named for, whatever the environment says: the processes
# libFuzzer starts for -jobs and -fork inherit it.
os.environ["TLSLEAK_TARGET"] = @TARGET_PY@

from tlsleak.fuzz.entry import main  # noqa: E402  (reads TLSLEAK_TARGET)

if __name__ == "__main__":
    sys.exit(main())
'''

PR_WORKFLOW: Final = """\
# Written by `tlsleak oss-fuzz @TARGET@` (tlsleak @VERSION@): docs/oss-fuzz.md.
# Fuzzes each pull request for 10 minutes (ClusterFuzzLite code-change mode);
# a finding fails the check and its input is kept as an artifact.
name: ClusterFuzzLite PR fuzzing
on:
  pull_request:
permissions: read-all
jobs:
  PR:
    runs-on: ubuntu-latest
    concurrency:
      group: ${{ github.workflow }}-${{ github.ref }}
      cancel-in-progress: true
    steps:
      - name: Build fuzzers
        id: build
        uses: google/clusterfuzzlite/actions/build_fuzzers@v1
        with:
          language: python
          github-token: ${{ secrets.GITHUB_TOKEN }}
          sanitizer: address
      - name: Run fuzzers
        id: run
        uses: google/clusterfuzzlite/actions/run_fuzzers@v1
        with:
          github-token: ${{ secrets.GITHUB_TOKEN }}
          fuzz-seconds: 600
          mode: code-change
          sanitizer: address
"""

BATCH_WORKFLOW: Final = """\
# Written by `tlsleak oss-fuzz @TARGET@` (tlsleak @VERSION@): docs/oss-fuzz.md.
# Fuzzes the default branch for an hour every day (ClusterFuzzLite batch
# mode), growing the corpus that pull-request fuzzing starts from.
name: ClusterFuzzLite batch fuzzing
on:
  schedule:
    - cron: '0 3 * * *'
  workflow_dispatch:
permissions: read-all
jobs:
  BatchFuzzing:
    runs-on: ubuntu-latest
    steps:
      - name: Build fuzzers
        id: build
        uses: google/clusterfuzzlite/actions/build_fuzzers@v1
        with:
          language: python
          sanitizer: address
      - name: Run fuzzers
        id: run
        uses: google/clusterfuzzlite/actions/run_fuzzers@v1
        with:
          github-token: ${{ secrets.GITHUB_TOKEN }}
          fuzz-seconds: 3600
          mode: batch
          sanitizer: address
"""
