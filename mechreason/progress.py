"""Terminal output: one progress display per process, and upstream warnings kept quiet.

Library code reports progress through :func:`bar` (a context manager); it never prints.
What the user sees depends on where stderr goes, decided once per process by
:func:`configure` (the CLI calls it from ``-q`` / ``-v``):

- a terminal: tqdm bars; a bar opened while another is open sits one line below it
  (fixed positions, so nested stages do not overwrite each other) and is cleared when
  done, leaving the outermost;
- a file or pipe: plain lines, one per milestone (start, every 25% or 30 s, end), each
  naming its place in the nesting (``demo > anchors > rollouts: 8/16``), with no carriage
  return or escape sequence, so a log reads line by line;
- quiet (``-q``): nothing.

Modules that still call tqdm directly take ``progress=live()``, so they draw a bar only
on a terminal. :func:`filter_upstream_warnings` silences known deprecation warnings of
the libraries we call, each matched by message and by the module that raises it, never
globally; :func:`quiet_upstream_bars` keeps the Hugging Face libraries' own bars out of a
log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

_LINE_EVERY_S = 30.0
_LINE_EVERY_FRACTION = 0.25
_LINE_GAP_S = 1.0
"""Lines mode: at most one milestone line a second (start and end lines always)."""


class _Settings:
    quiet: bool = False
    live: bool | None = None
    """None: decide by ``stream.isatty()`` at each bar."""
    stream: TextIO | None = None
    """None: ``sys.stderr`` at the time of each write."""


_S = _Settings()
_open: list[str] = []  # descriptions of the bars now open, outermost first


def configure(*, verbosity: int = 0, live: bool | None = None,
              stream: TextIO | None = None) -> None:
    """Set the display for this process: ``verbosity < 0`` shows no progress; ``live``
    forces bars (True) or lines (False) instead of asking the stream."""
    _S.quiet = verbosity < 0
    _S.live = live
    _S.stream = stream


def _stream() -> TextIO:
    return _S.stream if _S.stream is not None else sys.stderr


def live() -> bool:
    """Whether progress is drawn as live bars (on, and stderr is a terminal)."""
    if _S.quiet:
        return False
    if _S.live is not None:
        return _S.live
    return bool(getattr(_stream(), "isatty", lambda: False)())


class Progress:
    """A handle on one open bar: ``update(n)`` advances it, ``note(text)`` sets its
    suffix (on a terminal only: lines mode keeps a log short)."""

    def __init__(self, desc: str, total: int | None, unit: str, initial: int, shown: bool):
        self.desc, self.total, self.unit, self.n = desc, total, unit, initial
        self.path = " > ".join([*_open, desc])
        self._bar: Any = None
        self._lines = shown and not live()
        self._t0 = self._last_t = time.monotonic()
        self._last_n = initial
        if shown and live():
            from tqdm.auto import tqdm

            depth = len(_open)
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, position=depth,
                             leave=depth == 0, file=_stream(), dynamic_ncols=True)
        elif self._lines:
            self._line(f"started ({self._count()})" if total is not None else "started")

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._lines and self._due():
            self._line(f"{self._count()} ({time.monotonic() - self._t0:.1f} s)")
            self._last_n, self._last_t = self.n, time.monotonic()

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def _due(self) -> bool:
        if time.monotonic() - self._last_t < _LINE_GAP_S:
            return False
        if self.total:
            step = max(1, round(self.total * _LINE_EVERY_FRACTION))
            if self.n >= self.total or self.n - self._last_n >= step:
                return self.n < self.total  # the end has its own line
        return time.monotonic() - self._last_t >= _LINE_EVERY_S

    def _count(self) -> str:
        unit = self.unit if (self.total if self.total is not None else self.n) == 1 else f"{self.unit}s"
        return f"{self.n}/{self.total} {unit}" if self.total is not None else f"{self.n} {unit}"

    def _line(self, text: str) -> None:
        s = _stream()
        s.write(f"{self.path}: {text}\n")
        s.flush()

    def close(self, ok: bool = True) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._lines:
            verb = "done" if ok else "stopped"
            count = f"{self._count()} " if self.total is not None or self.n else ""
            self._line(f"{verb}, {count}in {time.monotonic() - self._t0:.1f} s")


@contextlib.contextmanager
def bar(desc: str, total: int | None = None, *, unit: str = "it", initial: int = 0,
        enabled: bool = True) -> Iterator[Progress]:
    """One stage's progress, nested inside any bar already open in this process."""
    p = Progress(desc, total, unit, initial, enabled and not _S.quiet)
    _open.append(desc)
    ok = False
    try:
        yield p
        ok = True
    finally:
        _open.pop()
        p.close(ok)


class _Handler(logging.Handler):
    """Log records on the display's stream (looked up per record), written above any
    open bars (tqdm.write) rather than through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if _open and live():
                from tqdm.auto import tqdm

                tqdm.write(text, file=_stream())
            else:
                _stream().write(text + "\n")
                _stream().flush()
        except Exception:
            self.handleError(record)


def setup_logging(verbosity: int = 0) -> None:
    """The CLI's logging: ERROR with ``-q`` (< 0), WARNING by default, INFO with ``-v``,
    DEBUG with ``-vv``; one line per record on stderr. Replaces only a handler of ours
    (so a second call, or a test's log capture, is left intact)."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        max(-1, min(verbosity, 2)), logging.DEBUG)
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(h)
    handler = _Handler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


UPSTREAM_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    # (category, message regex, module regex of the code that raises it)
    (FutureWarning, r".*`torch_dtype` is deprecated", r"transformers\..*"),
    (FutureWarning, r".*past_key_values.*deprecated", r"transformers\..*"),
    (DeprecationWarning, r".*", r"transformer_lens\..*"),
    (UserWarning, r".*TransformerBridge.*", r"transformer_lens\..*"),
    (FutureWarning, r".*", r"sae_lens\..*"),
    (UserWarning, r"The kopts argument is ignored", r"kaleido\..*"),
)
"""Known deprecation notices of the libraries we call that a user cannot act on."""


def quiet_upstream_bars() -> None:
    """Turn off the Hugging Face libraries' own tqdm bars (transformers' "Loading
    weights", GGUF de-quantising), which would write carriage returns into a log: through
    their switch when transformers is imported, else through the variable they read at
    import."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def filter_upstream_warnings() -> None:
    """Ignore :data:`UPSTREAM_WARNINGS`, each only where its module raises it."""
    for category, message, module in UPSTREAM_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
