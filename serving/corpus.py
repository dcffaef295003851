"""An offline corpus of real English sentences: first paragraphs of the Python standard library's docstrings."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from functools import lru_cache

# Modules whose docstrings are well-written English prose; a fixed list keeps the corpus deterministic.
CORPUS_MODULES: tuple[str, ...] = (
    "argparse",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "enum",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "http.server",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "mailbox",
    "mimetypes",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pickle",
    "pkgutil",
    "platform",
    "plistlib",
    "poplib",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "subprocess",
    "sysconfig",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    "zoneinfo",
)
DEFAULT_CORPUS_SIZE = 300
MIN_WORDS = 6
MAX_WORDS = 60
_PROSE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'\"()\-./]+[.]$")


def _first_paragraph(doc: str) -> str:
    """The docstring's first paragraph on one line."""
    para = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(para.split())


def _is_sentence(text: str) -> bool:
    """Plain English prose: starts with a capital, ends with a full stop, no code fragments."""
    words = text.split()
    return MIN_WORDS <= len(words) <= MAX_WORDS and bool(_PROSE.match(text)) and ">>>" not in text


def _candidates() -> set[str]:
    """First paragraphs of every public module, class and function docstring in CORPUS_MODULES."""
    found: set[str] = set()
    for name in CORPUS_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a stripped-down Python build; the corpus just gets smaller
            continue
        objects = [module, *(obj for attr, obj in vars(module).items() if not attr.startswith("_"))]
        for obj in objects:
            doc = getattr(obj, "__doc__", None) if (inspect.isclass(obj) or inspect.isroutine(obj)) else None
            if obj is module:
                doc = module.__doc__
            if isinstance(doc, str):
                text = _first_paragraph(doc)
                if _is_sentence(text):
                    found.add(text)
    return found


@lru_cache(maxsize=4)
def english_sentences(n: int = DEFAULT_CORPUS_SIZE) -> tuple[str, ...]:
    """`n` sentences, chosen deterministically by hash order so the set does not depend on import order."""
    ranked = sorted(_candidates(), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    if len(ranked) < n:
        raise ValueError(
            f"the docstring corpus has only {len(ranked)} sentences, fewer than the {n} asked for"
        )
    return tuple(ranked[:n])


def corpus_digest(sentences: tuple[str, ...] | list[str]) -> str:
    """A short digest of the corpus, used to key cached reference embeddings."""
    return hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:16]
