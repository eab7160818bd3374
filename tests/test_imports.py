"""The import rules of docs/design.md, read from the source: no module imports in a circle, the ground floor imports
no stage, and each stage imports only the stages below it (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import worldprobe

PACKAGE = Path(worldprobe.__file__).parent
COMMANDS = {"cli", "commands", "study", "dryrun"}  # the modules (and the package) that drive the stages
STAGE_IMPORTS = {
    "datasets": set(),
    "extract": {"datasets"},
    "probes": {"datasets", "extract"},  # extract: its cache API only (below)
    "neurons": {"datasets", "extract", "probes"},  # runs the model; the probe direction
    "interventions": {"datasets", "extract", "probes"},
    "reports": {"datasets", "probes"},  # probes: the results contract
}
"""Which stages each stage may import (besides the ground floor: every other top-level module)."""
REQUEST_API = "worldprobe.extract.options"  # a ModelRequest names which cache a probe reads
CACHE_API = "worldprobe.extract.cache"
"""The one module of extraction that the stages reading caches (probes, reports) may import."""


def _modules() -> dict[str, Path]:
    out = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return out


def _imports(file: Path, modules: dict[str, Path]) -> set[str]:
    """The worldprobe modules ``file`` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("worldprobe"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("worldprobe"))
    return {name for name in found if name in modules}


def _area(module: str) -> str:
    """The stage subpackage of a module, "commands" for the command modules, else "ground"."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in COMMANDS:
        return "commands"
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in STAGE_IMPORTS):
        return parts[1]
    return "ground"


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imports(file, modules) - {module} for module, file in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_imports_in_a_circle():
    assert _cycle(_graph()) is None


def test_the_circle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_each_stage_imports_only_the_ground_floor_and_the_stages_below_it():
    wrong = []
    for module, imported in _graph().items():
        area = _area(module)
        if area == "commands":
            continue
        allowed = {"ground", area} | STAGE_IMPORTS.get(area, set())
        wrong += [f"{module} -> {name}" for name in sorted(imported) if _area(name) not in allowed]
    assert not wrong, "imports against docs/design.md's ladder:\n" + "\n".join(wrong)


def test_the_areas_are_what_the_rule_means():
    modules = ("worldprobe.http", "worldprobe.study", "worldprobe.reports", "worldprobe.probes.ridge",
               "worldprobe.commands.probe", "worldprobe.extract")
    assert [_area(m) for m in modules] == ["ground", "commands", "reports", "probes", "commands", "extract"]
    assert set(_modules()) >= {"worldprobe.countries", "worldprobe.reports.content", "worldprobe.extract.cache"}


def test_probes_and_reports_read_extraction_only_through_the_cache_and_request_api():
    wrong = [
        f"{module} -> {name}"
        for module, imported in _graph().items()
        if _area(module) in ("probes", "reports")
        for name in sorted(imported)
        if _area(name) == "extract" and name not in (CACHE_API, REQUEST_API)
    ]
    assert not wrong, f"only {CACHE_API} and {REQUEST_API} may be imported by probes and reports:\n" + "\n".join(wrong)



def test_no_module_is_over_600_lines():
    """A room that grows past 600 lines holds more than one job (issue: study.py had 981, extract/cache.py 1,043)."""
    long = {str(f.relative_to(PACKAGE)): n for f in PACKAGE.rglob("*.py")
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > 600}  # fmt: skip
    assert not long, long


def _public_functions() -> dict[str, int]:
    """Public functions and methods outside the command layer -> their parameter count (self/cls not counted)."""
    counts = {}
    for file in PACKAGE.rglob("*.py"):
        module = ".".join(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        if _area(module) == "commands" or module.endswith("cli"):
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                counts[f"{module}.{node.name}:{node.lineno}"] = len([n for n in names if n not in ("self", "cls")])
    return counts


def test_no_public_function_takes_more_than_12_parameters():
    """Options that travel together travel as one settings object (ModelRequest, Batching, Asking, Steering,
    ProbeOptions, MainProbe), as HF datasets passes a DownloadConfig; a typer command takes one parameter per option
    and is exempt (issue: run_steer took 31, run_extraction 23)."""
    counts = _public_functions()
    assert counts["worldprobe.extract.runner.run_extraction:" + _line("extract/runner.py", "def run_extraction(")] <= 12
    wide = {name: n for name, n in counts.items() if n > 12}
    assert not wide, wide


def _line(path: str, text: str) -> str:
    lines = (PACKAGE / path).read_text(encoding="utf-8").splitlines()
    return str(next(i for i, line in enumerate(lines, 1) if line.startswith(text)))
