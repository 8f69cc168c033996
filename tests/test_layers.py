"""One-way layers (docs/architecture.md): the layers that describe and report never load the ones that
compute. Checked twice: by importing them in a fresh interpreter (what really loads), and by reading
their source (so an import under TYPE_CHECKING or inside a function cannot slip back in)."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "joulepath"
# Torch-free layers: the hardware model, workload, meter, facility twin, result types and report.
TORCH_FREE = (
    "joulepath.hw",
    "joulepath.hw.fleet",
    "joulepath.hw.calibration",
    "joulepath.workload",
    "joulepath.meter",
    "joulepath.facility",
    "joulepath.facility.feedback",
    "joulepath.control",
    "joulepath.control.forecast",
    "joulepath.plan",
    "joulepath.plan.search",
    "joulepath.plan.validate",
    "joulepath.plan.sweep",
    "joulepath.results",
    "joulepath.report",
    "joulepath.report.html",
    "joulepath.report.result_json",
    "joulepath.report.telemetry",
    "joulepath.report.wording",
)
# What report/ and results.py must never import: torch and every layer that computes results.
COMPUTING = (
    "torch",
    "joulepath.run",
    "joulepath.execute",
    "joulepath.engine",
    "joulepath.model",
    "joulepath.profile",
    "joulepath.quality",
    "joulepath.serving",
    "joulepath.bench",
    "joulepath.cli",
)


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute names of the modules `path` imports: every import anywhere in the file, or (top_level_only)
    those that run when it loads or that type checking follows (module level, `if`, `try`), not lazy ones
    inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).split(".") if path.name == "__init__.py" else _module_name(path).split(".")[:-1]
    nodes: list[ast.stmt] = []
    if top_level_only:
        pending = list(tree.body)
        while pending:
            node = pending.pop()
            nodes.append(node)
            if isinstance(node, ast.If | ast.Try):
                pending += node.body + node.orelse
    names: set[str] = set()
    for node in nodes if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def test_torch_free_layers_load_neither_torch_nor_the_engine() -> None:
    code = (
        f"import sys, {', '.join(TORCH_FREE)}; "
        f"print(sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in {COMPUTING!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_report_and_results_import_only_result_types_never_the_computing_layers() -> None:
    files = [PACKAGE / "results.py", *sorted((PACKAGE / "report").glob("*.py"))]
    for path in files:
        bad = sorted(m for m in _imports(path) if _within(m, COMPUTING))
        assert not bad, f"{path.relative_to(SRC)} imports {bad}; report and results.py stay below run/engine/torch"


def test_no_import_circle_through_profile_report_results_or_cli() -> None:
    """A circle (even a type-only one) means two modules cannot be read or changed one at a time."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {n for n in _imports(p, top_level_only=True) if n in modules and n != m} for m, p in modules.items()}
    owned = ("joulepath.profile", "joulepath.report", "joulepath.results", "joulepath.cli")
    for start in (m for m in graph if _within(m, owned)):
        came_from: dict[str, str] = {n: start for n in graph[start]}
        queue = list(graph[start])
        while queue:
            node = queue.pop(0)
            if node == start:
                path = [start]
                while path[-1] != start or len(path) == 1:
                    path.append(came_from[path[-1]])
                raise AssertionError(f"import circle: {' <- '.join(path)}")
            for n in graph[node] - came_from.keys():
                came_from[n] = node
                queue.append(n)


def test_facility_and_hw_never_import_control() -> None:
    """`control` sits above the twin and the hardware model: it imports them, never the reverse."""
    for package in ("facility", "hw"):
        for path in sorted((PACKAGE / package).rglob("*.py")):
            bad = sorted(m for m in _imports(path) if _within(m, ("joulepath.control",)))
            assert not bad, f"{path.relative_to(SRC)} imports {bad}; control depends on {package}, not the reverse"
    control = {m for p in sorted((PACKAGE / "control").rglob("*.py")) for m in _imports(p)}
    assert not {m for m in control if _within(m, ("torch", *COMPUTING[1:]))}, "control stays torch-free"


def test_plan_imports_only_hw_and_facility() -> None:
    """`plan` sits on the hardware model and the twin (docs/architecture.md); nothing else of joulepath."""
    allowed = ("joulepath.plan", "joulepath.hw", "joulepath.facility", "joulepath.units")
    for path in sorted((PACKAGE / "plan").rglob("*.py")):
        bad = sorted(m for m in _imports(path) if m.startswith("joulepath") and not _within(m, allowed))
        assert not bad, f"{path.relative_to(SRC)} imports {bad}; plan imports hw and facility only"
    for package in ("hw", "facility"):
        for path in sorted((PACKAGE / package).rglob("*.py")):
            assert not [m for m in _imports(path) if _within(m, ("joulepath.plan",))], f"{path} imports plan"
