"""`cliptune serve`: the model (and an index) over HTTP, with a search page at /."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import app, console, quiet_libraries
from cliptune.search.model_choice import DEFAULT_MODEL, MODEL_ENV

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@app.command()
def serve(
    model: Optional[str] = typer.Option(None, "--model", envvar=MODEL_ENV, show_envvar=True,
                                        help=f"Model spec or run directory (default: the index's model, else "
                                             f"{DEFAULT_MODEL})."),
    index_dir: Optional[Path] = typer.Option(None, "--index", help="Index directory to search (enables /search)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes it to the network."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Largest request body accepted (413 above)."),
    threshold: Optional[float] = typer.Option(None, "--threshold",
                                              help="Match threshold for /match (default: the model's own, if any)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=1,
                                             help="Largest picture accepted, in pixels (default: sized for the "
                                                  "model, (16 × its input side)², at least 2048²)."),
    max_concurrent: int = typer.Option(2, "--max-concurrent", min=1,
                                       help="Requests decoding pictures or running the model at once."),
    max_connections: int = typer.Option(64, "--max-connections", min=1,
                                        help="Open connections; over it the longest-idle one is closed."),
    header_timeout: float = typer.Option(10.0, "--header-timeout", min=0.1,
                                         help="Seconds a client has to send a request's headers."),
    keep_alive: int = typer.Option(5, "--keep-alive", min=1, help="Seconds an idle keep-alive connection stays."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
):
    """Serve /embed/text, /embed/image, /search, /match, /classify, /health, /docs and a search page at /."""
    quiet_libraries()
    from cliptune.search.limits import ServerLimits
    from cliptune.search.model_choice import resolve_model_spec
    from cliptune.search.serve import serve as run_server

    spec = resolve_model_spec(model, index_dir)
    if host not in LOOPBACK:
        console.print(f"[yellow]warning:[/] binding {host}: anyone who can reach this port can use the model "
                      "and see the indexed images; there is no authentication")
    console.print(f"serving model [bold]{spec}[/]" + (f" with index [bold]{index_dir}[/]" if index_dir else "")
                  + f" at http://{host}:{port}/ (API docs at /docs)")
    limits = ServerLimits(pixel_limit=max_pixels, max_concurrent=max_concurrent, max_connections=max_connections,
                          header_timeout_s=header_timeout, keep_alive_s=keep_alive)
    run_server(spec, index_dir, host=host, port=port, max_upload_mb=max_upload_mb, threshold=threshold,
               log_level=log_level, limits=limits)
