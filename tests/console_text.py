"""What a person sees: a command's renderer run into a recording console, and the lines that are raw data."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from rich.console import Console

# A Python repr of a dict or list of dicts ({'a': 1}, [{'a': ...), or a JSON object or fragment ({"a": 1}, "a": 1,).
RAW = re.compile(r"""\{\s*['"][^'"]+['"]\s*:|\[\s*\{|^\s*[\[{]\s*$|^\s*["'][\w .-]+["']\s*:\s""")


def render(show: Callable[..., None], *args: Any) -> str:
    """The text `show(*args, to=console)` prints, as a wide terminal would show it."""
    view = Console(record=True, width=200, force_terminal=False, color_system=None)
    show(*args, to=view)
    return view.export_text()


def raw_lines(text: str) -> list[str]:
    """Lines that show a raw dict, list of dicts or JSON instead of a table or a sentence."""
    return [line for line in text.splitlines() if RAW.search(line)]
