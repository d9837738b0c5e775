"""Run `cliptune ...` inside the test process, so torch and transformers are imported once per session."""

from __future__ import annotations

import sys


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`cliptune ARGS`: exit code, stdout, stderr (main() exits only on errors)."""
    from cliptune.cli import main

    monkeypatch.setattr(sys, "argv", ["cliptune", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err
