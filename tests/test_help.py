"""Every command's help: one style, a help line for every flag, real defaults, never ``(default: None)``."""

import argparse
import contextlib
import io

import pytest

from ran.cli import COMMANDS, main


def _parsers(name: str, monkeypatch) -> list[argparse.ArgumentParser]:
    """The parser ``ran <name> --help`` prints, and its sub-commands' parsers."""
    seen: list[argparse.ArgumentParser] = []
    monkeypatch.setattr(argparse.ArgumentParser, "print_help", lambda self, file=None: seen.append(self))
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit):
        main([name, "--help"])
    assert len(seen) == 1, f"ran {name} --help printed {len(seen)} parsers"
    parsers = list(seen)
    for parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return parsers


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's help line as the user reads it, keyed by its first flag (or its name)."""
    formatter = parser._get_formatter()
    return {
        (action.option_strings or [action.dest])[0]: formatter._expand_help(action) if action.help else ""
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
    }


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_flag_has_one_help_line_with_at_most_one_real_default(name, monkeypatch):
    for parser in _parsers(name, monkeypatch):
        for flag, text in _helps(parser).items():
            where = f"{parser.prog} {flag}"
            assert text.strip(), f"{where} has no help"
            assert "(default: None)" not in text, f"{where}: {text!r}"
            assert text.lower().count("default") <= 1, f"{where} states its default twice: {text!r}"


def test_demo_sizes_show_the_defaults_the_demo_uses(monkeypatch):
    from ran.demo import DemoOptions

    monkeypatch.delenv("RAN_DEMO_QUICK", raising=False)
    [parser] = _parsers("demo", monkeypatch)
    helps = _helps(parser)
    for key, size in DemoOptions().sizes().items():
        assert f"(default: {size};" in helps["--" + key.replace("_", "-")]
    assert "show" not in helps["--no-progress"]  # it hides them


def test_a_real_default_is_shown_once_and_false_never(monkeypatch):
    [parser] = _parsers("predict", monkeypatch)
    helps = _helps(parser)
    assert helps["--batch-size"].endswith(f"(default: {parser.get_default('batch_size')})")
    assert "default" not in helps["--json"]
