"""Every command's help is complete and clean: each option and argument says what it is for,
usage lines name arguments as click does (OUT, [DELIVERY]), no flag shows a type."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from radflow.cli import app

runner = CliRunner()
COMMAND = typer.main.get_command(app)  # typer carries its own click: walked by attributes
NAMES = sorted(COMMAND.commands)  # type: ignore[attr-defined]


def test_the_commands_are_all_walked() -> None:
    assert {"ingest", "score", "train", "quarantine", "results", "demo", "serve"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_has_help(name: str) -> None:
    command = COMMAND.commands[name]  # type: ignore[attr-defined]
    assert command.help and command.help.strip(), name
    missing = [
        p.name
        for p in command.params
        if not (getattr(p, "help", None) or "").strip() and p.name != "help"
    ]
    assert not missing, f"radflow {name}: no help for {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_usage_line_and_flags_are_clean(name: str) -> None:
    result = runner.invoke(app, [name, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage
    params = COMMAND.commands[name].params  # type: ignore[attr-defined]
    for argument in (p for p in params if p.param_type_name == "argument"):
        assert re.search(rf"\b{(argument.metavar or argument.name or '').upper()}\b", usage)
    assert "<bool>" not in result.output and "BOOLEAN" not in result.output


def test_help_paragraphs_are_not_broken_mid_sentence() -> None:
    """The command list shows each command's first paragraph and `--help` every paragraph, with
    the help text's line breaks: each paragraph is one line, not one cut where the source was
    wrapped."""
    for name in NAMES:
        command = COMMAND.commands[name]  # type: ignore[attr-defined]
        for paragraph in (command.help or "").strip().split("\n\n"):
            assert "\n" not in paragraph, f"radflow {name}: {paragraph!r}"


def test_score_given_both_a_delivery_and_pending_says_so() -> None:
    result = runner.invoke(app, ["score", "some/folder", "--pending"])
    assert result.exit_code == 2
    assert result.output.splitlines()[:2] == [
        "error: both a delivery and --pending were given",
        "hint: give one of the two",
    ]


def test_a_first_promotion_does_not_read_as_a_refusal() -> None:
    from radflow.cli import _decision

    assert _decision(True, "no champion yet") == "promoted to champion (the first model)"
    assert _decision(True, "AUC 0.91 > champion 0.88") == (
        "promoted to champion: AUC 0.91 > champion 0.88"
    )
    assert _decision(False, "AUC 0.80 < champion 0.88") == "not promoted: AUC 0.80 < champion 0.88"
