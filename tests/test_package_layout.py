"""The package layout the docs promise: the science library (``hsaudit`` outside ``hsaudit.tasks``)
never imports law or luigi, and the law layer lives under the package's namespace."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hsaudit"


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_library_never_imports_law_or_luigi():
    library = [p for p in PACKAGE.rglob("*.py") if "tasks" not in p.relative_to(PACKAGE).parts]
    assert len(library) > 30
    offenders = {str(p.relative_to(PACKAGE)): sorted(_imported_roots(p) & {"law", "luigi"})
                 for p in library}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_law_tasks_are_namespaced_under_the_package():
    assert (PACKAGE / "tasks" / "audit.py").is_file()
    # no generic top-level package names that collide with other projects' packages
    assert not (PACKAGE.parent / "analysis").exists() and not (PACKAGE.parent / "tasks").exists()
    modules = (PACKAGE.parent / "law.cfg").read_text().split("[modules]")[1].split("[")[0].split()
    assert modules == ["hsaudit.tasks"]
