"""YAML a user hands over, read as data of a bounded size.

``yaml.safe_load`` builds no objects but still follows aliases: 300 bytes of nested anchors (a "billion
laughs") stand for a value that takes gigabytes once anything walks it (a repr in an error message, a
comparison). Options never need aliases, so a document with one is refused while it is parsed, before any
value exists; a mapping that names a key twice is refused (the last would win silently); files are refused
above :data:`MAX_YAML_BYTES` before they are read, and errors name the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ran.errors import UserError

MAX_YAML_BYTES = 1 << 20  # a training config is a few kB


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader, refusing ``*alias`` nodes (anchors alone are harmless)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted", self.peek_event().start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A mapping that names a key twice is refused: the last one would win, silently."""
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str, first_line: int = 1) -> Any:
    """The YAML document ``text`` as plain data; a ValueError naming ``source`` and the line otherwise
    (``first_line``: the line of ``source`` that ``text`` starts on, for YAML inside another file)."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + first_line}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise UserError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise UserError(f"{source}: not valid YAML: nested too deeply") from None


def read_yaml(path: str | Path, what: str, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """The YAML file ``path`` (``what`` names it in errors) as plain data, at most ``max_bytes`` long."""
    path = Path(path)
    if not path.is_file():
        found = "a folder" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
        raise FileNotFoundError(f"{what} {path}: {found}; expected a YAML file")
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UserError(f"{path}: larger than {max_bytes:,} bytes; {what} is a small YAML file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid YAML: not UTF-8 text") from None
    return load_yaml(text, str(path))


__all__ = ["MAX_YAML_BYTES", "load_yaml", "read_yaml"]
