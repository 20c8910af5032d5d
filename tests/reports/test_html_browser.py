"""The page of a real campaign, opened in headless Chromium: it loads clean and shows its plots.

A short campaign on the planted leak (``-runs=N``, not time: nothing here
depends on the machine's speed) makes the folder, and one more finding whose
message is HTML is stored beside its leak.  Chromium (Debian's ``chromium``
package; .ci/run installs it) then opens the page from a file:

- ``--dump-dom``: the DOM as the browser built it holds the plots (pygal's
  SVG with a drawn line each) and one table row per finding, and the hostile
  message is text, not an element;
- ``--enable-logging=stderr``: the console stays empty (a blocked load or a
  script refused by the page's Content-Security-Policy would be logged there:
  a control page proves that the check sees both);
- ``--screenshot``: the picture is not blank, and the plots' line colours
  are drawn (the PNG is decoded here, with zlib).

Chromium never reaches the network: it runs in a network namespace of its
own where tlsleak's workers run (:mod:`tlsleak._netns`; loopback only), and
every host name resolves to nothing (``--host-resolver-rules``).  Without
Chromium the test is skipped, except under ``CI`` where it fails: CI installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tlsleak._netns import isolate
from tlsleak.cases.case import InitCase
from tlsleak.check.findings import FindingStore
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.cli import main
from tlsleak.targets.base import Outcome, Status

pytest.importorskip("pygal", reason="the 'report' extra (pygal) is not installed")
pytest.importorskip("atheris", reason="the 'fuzz' extra (atheris) makes the campaign")

HOSTILE = "<script>document.title='pwned'</script><b id=injected>bold</b>"
#: Generous: a cold Chromium on a busy two-core machine.
BROWSER_TIMEOUT = 180
WIDTH, HEIGHT = 1280, 2200


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing under CI: .ci/run should have installed it")
    pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it")


@dataclass(frozen=True)
class Opened:
    dom: str
    console: list[str]
    screenshot: Path


def _open(page: Path, tmp: Path) -> Opened:
    """``page`` in headless Chromium, off the network: its DOM, console lines and a screenshot."""
    browser = _chromium()
    shot = tmp / f"{page.stem}.png"
    common = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",  # as root, Chromium refuses to start with its sandbox
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={WIDTH},{HEIGHT}",
    ]
    outputs = []
    for mode in ("--dump-dom", f"--screenshot={shot}"):
        with tempfile.TemporaryDirectory(dir=tmp) as profile:
            done = subprocess.run(
                [*common, f"--user-data-dir={profile}", mode, page.absolute().as_uri()],
                capture_output=True,
                text=True,
                timeout=BROWSER_TIMEOUT,
                preexec_fn=isolate,  # a namespace with loopback only, like the workers
                check=False,
            )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done)
    # The page's own console only: Chromium's internal pages (source
    # chrome://...) log too, e.g. "Slow network is detected" on a busy machine.
    console = [
        line
        for done in outputs
        for line in done.stderr.splitlines()
        if ":CONSOLE" in line and "source: chrome://" not in line
    ]
    return Opened(outputs[0].stdout, console, shot)


def _pixels(png: Path) -> Iterator[tuple[int, int, int]]:
    """The RGB pixels of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), (depth, interlace)
    channels = {2: 3, 6: 4}[colour]
    raw, stride = zlib.decompress(idat), width * channels
    previous = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + best) & 0xFF
        for x in range(width):
            r, g, b = line[x * channels : x * channels + 3]
            yield r, g, b
        previous = line


def _colours(png: Path) -> tuple[int, float, int]:
    """Distinct colours, the share of pixels that are not (near) white, and red line pixels."""
    seen: set[tuple[int, int, int]] = set()
    inked = reds = total = 0
    for r, g, b in _pixels(png):
        total += 1
        seen.add((r, g, b))
        inked += min(r, g, b) < 235
        # pygal's first series colour is #F44336; lines are antialiased, so roughly.
        reds += r > 200 and g < 140 and b < 130
    return len(seen), inked / total, reds


@pytest.fixture(scope="module")
def campaign_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page of a short real campaign on the planted leak, plus a finding with HTML in it."""
    _chromium()  # skip (or fail under CI) before spending a campaign
    tmp = tmp_path_factory.mktemp("campaign")
    out, corpus = tmp / "out", tmp / "corpus"
    corpus.mkdir()  # empty: libFuzzer starts from nothing, and -runs=N counts every input
    argv = ["fuzz", "control-leaky", "--out", str(out), "--corpus", str(corpus), "-q"]
    assert main([*argv, "--", "-runs=300"]) == 1
    hostile = Finding(
        FindingKind.EXCEPTION,
        "control-leaky",
        InitCase(key=b"k", labels=(HOSTILE,)),
        Outcome(Status.ERROR, step="key", message=HOSTILE),
        stack=(HOSTILE,),
    )
    FindingStore(out / "findings").add(hostile, hostile.case)
    page = tmp / "campaign.html"
    assert main(["report", str(out), "--html", str(page)]) == 0
    return page


def test_the_page_of_a_real_campaign_renders_in_chromium(campaign_page: Path) -> None:
    opened = _open(campaign_page, campaign_page.parent)
    # Nothing was refused, blocked or failed on the way: the console is empty.
    assert opened.console == []
    dom = opened.dom
    assert "<title>tlsleak campaign: control-leaky</title>" in dom
    # The plots, as the browser built them: pygal's SVG, each with a line drawn.
    charts = re.findall(r'<svg[^>]*class="pygal-chart"', dom)
    assert len(charts) >= 4, len(charts)
    lines = re.findall(r'<path d="M[^"]+ L[^"]+" class="line reactive nofill"', dom)
    assert len(lines) >= 4, len(lines)
    for title in ("Executions per second", "Corpus size", "Coverage", "Distinct findings"):
        assert f"<figcaption>{title}" in dom
    # The table: the campaign's leak, then the stored exception, one row each.
    rows = re.findall(r'<tr class="finding">(.*?)</tr>', dom, re.DOTALL)
    assert len(rows) == 2, rows
    assert '<td class="kind-leak">leak</td>' in rows[0]
    assert "SSL_CTX +1" in rows[0]
    assert "tlsleak replay " in rows[0]
    # The hostile message is text: escaped, never an element the browser made.
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in rows[1]
    assert "<script" not in dom.lower()
    assert 'id="injected"' not in dom
    # The screenshot: ink on the page, many colours, and the plots' red lines.
    colours, inked, reds = _colours(opened.screenshot)
    assert colours > 500, colours  # antialiased text and lines
    assert inked > 0.02, inked
    assert reds > 200, reds


def test_the_browser_checks_can_fail(tmp_path: Path) -> None:
    """Controls: a page that loads from the web and runs a script is caught, a blank one too."""
    control = tmp_path / "control.html"
    control.write_text(
        "<!DOCTYPE html><html><head><meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'\"></head><body>"
        "<img src='http://example.invalid/x.png'><script>document.title='ran'</script>"
        "</body></html>"
    )
    opened = _open(control, tmp_path)
    # The image and the script, refused by the policy, and said on the console.
    assert any("Loading the image 'http://example.invalid/x.png'" in x for x in opened.console)
    assert any("Executing inline script violates" in x for x in opened.console)
    assert "<title>ran</title>" not in opened.dom
    colours, inked, reds = _colours(opened.screenshot)
    assert colours < 500, colours  # a broken image's icon, nothing more
    assert inked < 0.01, inked
    assert reds == 0
