"""What every command module shares: the typer app and its command groups, the consoles, the `--json`
flag, user-error handling and strict JSON output. Command modules import this, never the package."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column

from joulepath import __version__
from joulepath.hw import UnknownHardwareError
from joulepath.meter import MeterError
from joulepath.report.result_json import plain
from joulepath.scenario import ScenarioError
from joulepath.workload import TraceError

app = typer.Typer(
    help="joulepath: find where the time and the joules of an AI workload go, from token to wall.",
    no_args_is_help=True,
    add_completion=False,
)
hw_app = typer.Typer(help="The hardware catalog: accelerators, memory tiers, interconnects.", no_args_is_help=True)
trace_app = typer.Typer(help="Request traces: statistics of a trace file.", no_args_is_help=True)
scenario_app = typer.Typer(help="Scenarios: print the default, check a file.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: batch-1 decode, continuous batching.", no_args_is_help=True)
app.add_typer(hw_app, name="hw")
app.add_typer(trace_app, name="trace")
app.add_typer(scenario_app, name="scenario")
app.add_typer(bench_app, name="bench")

console = Console()  # width: the terminal's, else $COLUMNS, else 80 (a pipe); tables fit it (cli.tables)
err_console = Console(stderr=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
USER_ERRORS = (ScenarioError, TraceError, UnknownHardwareError, MeterError, ValueError, OSError)
T = TypeVar("T")


def guarded(fn: Callable[[], T]) -> T:
    """Run `fn`; a user error becomes one red line and exit status 2."""
    try:
        return fn()
    except USER_ERRORS as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def print_json(data: Any) -> None:
    """Strict JSON on stdout: a non-finite number is null (as in result.json), never `NaN`."""
    sys.stdout.write(json.dumps(plain(data), indent=2, allow_nan=False) + "\n")


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        console.print(f"joulepath {__version__}")
        raise typer.Exit()


def progress(with_bar: bool = False, quiet: bool = False) -> Progress:
    """A progress display on stderr whose descriptions wrap instead of being cut at the terminal's width."""
    description = TextColumn("{task.description}", table_column=Column(ratio=1, overflow="fold"))
    columns: list[ProgressColumn] = [SpinnerColumn(), description, *([BarColumn(bar_width=20)] if with_bar else [])]
    return Progress(*columns, TimeElapsedColumn(), console=err_console, disable=quiet)
