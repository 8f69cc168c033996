"""The `joulepath` command line (typer + rich). Every command has `--json` for machines; errors
print one clear message and exit with status 2, never a traceback; tables fit an 80-column terminal
or a pipe without cutting a name or a number (`cli.tables`).

Commands live by topic and register on `common.app` when imported, here, in the order `--help` lists
them: `core` (hw, trace, scenario, meter, run, query), `compute` (generate, bench, train, eval, align,
guard, profile), `facility` (twin), `plan` (plan, sweep, sweep-query), `serve` (serve, bench
serve). Heavy modules (torch, the engine, the run) load inside commands."""

from joulepath.cli import core  # noqa: I001 - first, so `--help` lists the main job and the catalog first
from joulepath.cli import compute, facility, plan, serve
from joulepath.cli.common import app

__all__ = ["app", "compute", "core", "facility", "plan", "serve"]


def main() -> None:  # pragma: no cover - console entry point
    app()
