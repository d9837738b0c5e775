"""The `cliptune` command line: thin wrappers that parse, load config and call the library.

Heavy modules (torch, transformers) are imported inside commands so `cliptune --help` starts instantly.
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid data.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from cliptune.errors import CliptuneError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune CLIP-style dual encoders on your image–text data, prove the gain, use the result.")
data_app = typer.Typer(no_args_is_help=True, help="Build or convert datasets.")
build_app = typer.Typer(no_args_is_help=True, help="Build a demo dataset from installed packages.")
app.add_typer(data_app, name="data")
data_app.add_typer(build_app, name="build")

console = Console(stderr=True, soft_wrap=True)
out = Console()


def quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def progress_enabled(quiet: bool) -> bool:
    return not quiet


# Each command lives in its own module under cliptune/commands/ and registers itself on import.
COMMAND_MODULES = (
    "cliptune.commands.train",
    "cliptune.commands.evaluate",
    "cliptune.commands.data",
    "cliptune.commands.demo",
    "cliptune.commands.to_wds",
    "cliptune.commands.validate",
    "cliptune.commands.classify",
    "cliptune.commands.report",
    "cliptune.commands.match",
    "cliptune.commands.search",
    "cliptune.commands.serve",
    "cliptune.commands.wise",
    "cliptune.commands.pretrain",
    "cliptune.commands.recipes",
    "cliptune.commands.tune",
)


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name)


def main() -> None:
    """Entry point: click reports usage errors itself (exit 2); cliptune's errors become one red line + exit code."""
    _register_commands()
    try:
        app()
    except CliptuneError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
