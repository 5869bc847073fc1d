"""Imports only flow downwards (DESIGN.md "The layers"; CONVENTIONS.md):

    protocol -> state -> storage -> services -> api, federation -> server, __main__, inspect

A module may import its own layer or a lower one, never a higher one; and within a layer the
packages must not import each other in a circle (services are built one after the other in
server.py: a circle would mean one of them cannot be given the other).

Every import counts: at module level, inside functions (lazy imports are still dependencies), and
inside `if TYPE_CHECKING:` blocks. Type-only imports count because a type annotation is a
dependency of the code that carries it; they are held to the same rules, with ONE exception
(`TYPE_ONLY_UPWARD`): route and federation modules name `homeserver.server.HomeServer`, the object
their `register(router, hs)` receives, in annotations only.

The unit is the package: `storage`, `federation`, `homeserver.api`, `homeserver.protocol`,
`homeserver.state`, and each `homeserver.<name>` service package or module (`homeserver.rooms`,
`homeserver.errors`, `homeserver.notifier`...). Imports within one unit are free.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("homeserver", "storage", "federation")

# layer of each unit not in the services layer; every other `homeserver.<name>` is a service
LAYERS = {
    "homeserver": 0,  # the package itself: only `__version__`
    "homeserver.protocol": 0,
    "homeserver.state": 1,
    "storage": 2,
    # 3: services (homeserver/<domain>/, errors, validation, notifier, ratelimit, config, ...)
    "homeserver.api": 4,
    "federation": 4,
    "homeserver.server": 5,
    "homeserver.__main__": 5,
    "homeserver.inspect": 5,  # an offline tool over the store, run from __main__
}
SERVICES = 3
LAYER_NAMES = {0: "protocol", 1: "state", 2: "storage", 3: "services", 4: "api/federation", 5: "wiring"}

# (importing unit, imported unit) allowed upward when the import is for type checking only
TYPE_ONLY_UPWARD = {("homeserver.api", "homeserver.server"), ("federation", "homeserver.server")}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module
    where: str  # path:line
    type_only: bool


def unit_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "homeserver" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def layer_of(unit: str) -> int:
    return LAYERS.get(unit, SERVICES)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(source: str, module: str, path: str, *, is_package: bool = False) -> Iterator[Import]:
    """Every import of the project's own modules in `source`, wherever it stands."""
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, type_only: bool) -> Iterator[Import]:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, True)
            for child in node.orelse:
                yield from visit(child, type_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield Import(module, alias.name, f"{path}:{node.lineno}", type_only)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if source.split(".")[0] in PACKAGES:
                # `from homeserver import inspect` imports the module homeserver.inspect
                names = (f"{source}.{alias.name}" for alias in node.names)
                for target in sorted({name if _is_module(name) else source for name in names}):
                    yield Import(module, target, f"{path}:{node.lineno}", type_only)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, type_only)

    yield from visit(ast.parse(source), False)


def project_imports() -> list[Import]:
    found: list[Import] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = _module_name(path)
            rel = str(path.relative_to(ROOT))
            found += imports_of(path.read_text(), module, rel, is_package=path.name == "__init__.py")
    return found


def upward(imports: Iterable[Import]) -> list[str]:
    """Imports of a higher layer than the importer's."""
    problems = []
    for imp in imports:
        src, dst = unit_of(imp.module), unit_of(imp.target)
        if src == dst or layer_of(dst) <= layer_of(src):
            continue
        if imp.type_only and (src, dst) in TYPE_ONLY_UPWARD:
            continue
        kind = "type-only import" if imp.type_only else "import"
        problems.append(
            f"{imp.where}: {imp.module} ({LAYER_NAMES[layer_of(src)]}) has an upward {kind} of {imp.target} "
            f"({LAYER_NAMES[layer_of(dst)]})"
        )
    return problems


def cycles(imports: Iterable[Import]) -> list[str]:
    """Circles between units of one layer, each shown with an import for every step."""
    edges: dict[str, dict[str, str]] = {}
    for imp in imports:
        src, dst = unit_of(imp.module), unit_of(imp.target)
        if src != dst and layer_of(src) == layer_of(dst):
            edges.setdefault(src, {}).setdefault(dst, imp.where)
    problems: list[str] = []
    seen: set[frozenset[str]] = set()

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, {})):
            if nxt == start:
                circle = [*path, start]
                key = frozenset(circle)
                if key not in seen:
                    seen.add(key)
                    steps = ", ".join(f"{a} -> {b} ({edges[a][b]})" for a, b in itertools.pairwise(circle))
                    problems.append(f"import cycle: {steps}")
            elif nxt not in path and nxt > start:  # each circle found once, from its smallest unit
                walk(start, nxt, [*path, nxt])

    for unit in sorted(edges):
        walk(unit, unit, [unit])
    return problems


def http_server_imports(source: str, path: str) -> list[str]:
    """Where `source` imports aiohttp's server side (requests, responses, applications)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        if any(name == "aiohttp.web" or name.startswith(("aiohttp.web.", "aiohttp.web_")) for name in names):
            found.append(f"{path}:{node.lineno}: imports aiohttp's server side below the api layer")
    return found


def test_no_upward_imports() -> None:
    problems = upward(project_imports())
    assert not problems, "\n".join(problems)


def test_no_import_cycles_between_packages_of_one_layer() -> None:
    problems = cycles(project_imports())
    assert not problems, "\n".join(problems)


def test_no_http_types_below_the_api_layer() -> None:
    """Services take plain values: the request is read in homeserver/api/ (an HTTP client, as URL
    previews use, is not a server type and is allowed)."""
    problems = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if layer_of(unit_of(_module_name(path))) < layer_of("homeserver.api"):
                problems += http_server_imports(path.read_text(), str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)
    assert http_server_imports("if TYPE_CHECKING:\n    from aiohttp import web\n", "x")
    assert not http_server_imports("import aiohttp\nfrom aiohttp.abc import AbstractResolver\n", "x")


def test_the_walk_sees_the_whole_tree() -> None:
    """Guards the test itself: lazy and type-only imports are found, and so are the layers."""
    imports = project_imports()
    assert any(i.module == "homeserver.server" and i.target.startswith("homeserver.media") for i in imports)
    assert any(i.type_only and i.target == "homeserver.server" for i in imports)
    assert {unit_of(i.module) for i in imports} >= {"storage", "homeserver.api", "homeserver.rooms"}


def _parse(source: str, module: str) -> list[Import]:
    return list(imports_of(source, module, module))


def test_an_upward_import_is_found_wherever_it_stands() -> None:
    lazy = "def f():\n    from homeserver.rooms.pipeline import EventPipeline\n"
    assert upward(_parse(lazy, "storage.events"))
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from homeserver.api.http import Router\n"
    assert upward(_parse(typed, "homeserver.auth.tokens"))
    relative = "from ..api import http\n"
    assert upward(_parse(relative, "homeserver.auth.tokens"))
    assert not upward(_parse("from homeserver.errors import MatrixError\n", "homeserver.api.http"))
    hs = "if TYPE_CHECKING:\n    from homeserver.server import HomeServer\n"
    assert not upward(_parse(hs, "homeserver.api.client.rooms"))  # the one type-only exception
    assert upward(_parse("from homeserver.server import HomeServer\n", "homeserver.api.client.rooms"))


def test_a_cycle_between_services_is_found() -> None:
    a = _parse("from homeserver.sync.filters import split_path\n", "homeserver.push.evaluator")
    b = _parse("if TYPE_CHECKING:\n    from homeserver.push.service import PushService\n", "homeserver.sync.rooms")
    assert cycles(a + b) == [
        "import cycle: homeserver.push -> homeserver.sync (homeserver.push.evaluator:1), "
        "homeserver.sync -> homeserver.push (homeserver.sync.rooms:2)"
    ]
    assert not cycles(a)
