"""fuzz finds pass-phrase prompts, as check does: the worker reads its log back after each input.

Positive control: ``control_prompt.c`` reads encrypted keys with no password
callback, so OpenSSL's default one prints "Enter PEM pass phrase:"; a
campaign seeded with two encrypted keys must report one ``prompt`` finding
(one cause, whatever the key type) and store a folder that replays it.
Negative control: its fixed twin answers with no password and never prompts.
Campaigns end after ``-runs=N``; the ``seconds`` given is a bound a passing
run never reaches.
"""

from __future__ import annotations

from pathlib import Path

from tlsleak.cli import main
from tlsleak.fuzz.campaign import Campaign, CampaignOptions

GENEROUS = 300.0


def _campaign(library: Path, corpus: Path, out: Path) -> Campaign:
    options = CampaignOptions(
        f"c:{library}",
        out,
        corpus=corpus,
        seconds=GENEROUS,
        minimize_budget=4,
        libfuzzer_flags=("-runs=200",),
    )
    return Campaign(options)


def test_a_campaign_reports_a_pass_phrase_prompt_once_and_stores_it(
    c_controls: dict[str, Path], encrypted_keys: Path, tmp_path: Path
) -> None:
    status = _campaign(c_controls["prompt"], encrypted_keys, tmp_path / "out").run()
    prompts = [f for f in status.findings if f.kind == "prompt"]
    assert len(prompts) == 1, status.findings
    folder = prompts[0].folder
    assert folder is not None
    assert main(["replay", str(folder)]) == 1  # still prompts, from its folder


def test_a_library_that_gives_no_password_gives_a_campaign_no_prompt(
    c_controls: dict[str, Path], encrypted_keys: Path, tmp_path: Path
) -> None:
    status = _campaign(c_controls["prompt-fixed"], encrypted_keys, tmp_path / "out").run()
    assert status.execs >= 200
    assert [f.kind for f in status.findings] == []
