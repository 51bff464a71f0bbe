"""The README shows only commands and options that exist."""
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diarize.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> list[tuple[str, list[str]]]:
    """(subcommand, options) of every `diarize ...` line in the README's console and bash blocks."""
    blocks = re.findall(r"```(?:console|bash)\n(.*?)```", README.read_text(), flags=re.S)
    found = []
    for line in "\n".join(blocks).splitlines():
        line = line.split("#")[0].strip().removeprefix("$ ")
        match = re.match(r"diarize (\w+)(.*)", line)
        if match:
            found.append((match.group(1), re.findall(r"(--[a-z][a-z-]*)", match.group(2))))
    return found


def test_the_readme_shows_every_command():
    shown = {name for name, _ in readme_commands()}
    assert {"cluster", "embed", "evaluate", "train", "validate", "info", "benchmark"} <= shown


@pytest.mark.parametrize("command, options", readme_commands())
def test_each_command_and_option_the_readme_shows_exists(command, options):
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output, f"diarize {command} has no {option}"
