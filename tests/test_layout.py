"""The package's layout: each part imports only what its docstring says it may, the parts form
layers (no part imports one that imports it back), no module imports itself in a circle, and
no module is over the size limit.

The parts are the sub-packages of ``src/metajax`` and the modules directly in it; each says in
its docstring what else of metajax it may import ("It may import only metajax.core, ..." or
"It imports no other part of metajax"). The imports are read from the source (every import
statement, inside functions and ``TYPE_CHECKING`` blocks too), not from what Python loads.
"""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "metajax"
FACE = {"metajax", "metajax.__main__"}  # the public face and ``python -m``, above every part
MAX_LINES = 400
MAX_ROOT_MODULES = 10


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def part_of(module: str) -> str:
    """The part a module belongs to: ``metajax.core.task`` to ``metajax.core``."""
    return ".".join(module.split(".")[:2])


PARTS = sorted({part_of(m) for m in MODULES} - FACE)


def imports_of(module: str) -> set[str]:
    """The metajax modules that ``module``'s source imports (a package's ``__init__`` when a
    name is taken from the package itself)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "metajax")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "metajax":
            assert node.level == 0, f"{module}: relative import"
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in MODULES else node.module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def allowed_imports(part: str) -> set[str]:
    """What ``part``'s docstring says it may import."""
    path = MODULES[part]
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = " ".join(docstring.split())
    if "It imports no other part of metajax." in text:
        return set()
    sentence = re.search(r"It may import (.*?)\.(?:\s|$)", text)
    assert sentence, f"{path}: the docstring does not say what the part may import"
    return set(re.findall(r"metajax\.\w+", sentence.group(1)))


@pytest.mark.parametrize("part", PARTS)
def test_each_part_imports_only_what_its_docstring_allows(part):
    allowed = allowed_imports(part)
    assert allowed <= set(PARTS), f"{part} names parts that do not exist: {allowed - set(PARTS)}"
    used = {
        (module, target)
        for module in MODULES
        if part_of(module) == part
        for target in GRAPH[module]
        if part_of(target) != part
    }
    forbidden = sorted((m, t) for m, t in used if part_of(t) not in allowed)
    assert forbidden == [], f"{part} may import only {sorted(allowed)}"


def test_the_parts_form_layers():
    """The allowed imports between parts have no circle, so the parts stack in layers; the
    face sits above them all."""
    allowed = {part: allowed_imports(part) for part in PARTS}
    layers: list[set[str]] = []
    placed: set[str] = set()
    while len(placed) < len(PARTS):
        layer = {p for p in PARTS if p not in placed and allowed[p] <= placed}
        assert layer, f"the parts that may import each other: {sorted(set(PARTS) - placed)}"
        layers.append(layer)
        placed |= layer
    assert [sorted(layer) for layer in layers] == [
        ["metajax._files", "metajax._validation", "metajax.plots"],
        ["metajax.core", "metajax.data", "metajax.models", "metajax.options"],
        ["metajax.config"],
        ["metajax.algorithms", "metajax.runs"],
        ["metajax.tasks"],
        ["metajax.evaluation"],
        ["metajax.cli"],
    ]
    for module in MODULES:
        if module not in FACE:
            assert not GRAPH[module] & FACE, f"{module} imports the package's face"


def test_no_module_imports_itself_through_others():
    """No circle of imports between modules, inside a part or across parts."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            assert state.get(target) != "open", f"import circle: {' -> '.join([*path, target])}"
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [module])


def test_modules_are_small_and_few_sit_at_the_root():
    sizes = {module: len(path.read_text().splitlines()) for module, path in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}
    root_modules = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py",)]
    assert len(root_modules) <= MAX_ROOT_MODULES, root_modules


def test_a_sub_package_face_defines_nothing():
    """A sub-package's ``__init__`` holds its docstring and imports only: each concept lives in
    a module of its own."""
    for module, path in MODULES.items():
        if path.name == "__init__.py" and module != "metajax":
            body = ast.parse(path.read_text()).body[1:]
            kinds = {type(node).__name__ for node in body}
            assert kinds <= {"Import", "ImportFrom"}, f"{module} defines {kinds}"
