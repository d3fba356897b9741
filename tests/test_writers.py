"""Two rules of the source, checked on its text (``ast``, nothing imported):

- the actions in ``panel/actions/`` are the only writers of the database's rows: nothing else
  under ``panel/`` creates, updates, saves or deletes a model of ``panel/models.py``, or records
  an event with ``emit`` (which writes an ``Event`` row);
- every ``panel.X`` import, at the top of a module or inside a function, goes from a layer to
  the same layer or a lower one: entry points → follower and jobs → actions → I/O and storage
  → the pure core.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PANEL = REPO_ROOT / "panel"

# ---------------------------------------------------------------------------------------------
# The only writers
# ---------------------------------------------------------------------------------------------

ACTIONS = "panel/actions/"
# Paths (a directory ends with "/") that may write rows outside the actions, and why.
WRITERS_ALLOWED = {
    "panel/migrations/": "schema history: each migration builds the tables as they were then",
    "panel/events.py": "the event store: emit() records the Event row, and only actions call it",
}
# <Model>.<call>(…) writes rows of that model's table.
MODEL_WRITES = frozenset(
    {
        "create",
        "insert",
        "insert_many",
        "insert_from",
        "update",
        "delete",
        "replace",
        "replace_many",
        "get_or_create",
        "bulk_create",
        "bulk_update",
    }
)
# <row>.<call>(…) writes one row; ast cannot tell a row from anything else, so every such call
# counts (nothing under panel/ saves anything but rows).
ROW_WRITES = frozenset({"save", "delete_instance"})
EMIT = "emit"  # panel.events.emit records an Event row


def model_names(source: str) -> frozenset[str]:
    """The classes of a models module that are peewee models (subclasses of ``Model``)."""
    models: set[str] = set()
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}
        if "Model" in bases or bases & models:
            models.add(node.name)
    return frozenset(models)


MODELS = model_names((PANEL / "models.py").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Write:
    """A call that writes rows: where it is and what it says."""

    path: str
    line: int
    call: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.call}"


def _local_names(tree: ast.Module, module: str, names: Iterable[str]) -> set[str]:
    """The names ``names`` of ``module`` go by in a module (``from … import User as U``)."""
    wanted = set(names)
    local = set(wanted)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == module:
            local |= {alias.asname for alias in node.names if alias.name in wanted and alias.asname}
    return local


def _writes(
    func: ast.expr, models: frozenset[str], local_models: set[str], emits: set[str]
) -> bool:
    """True when calling ``func`` writes rows."""
    if isinstance(func, ast.Name):  # emit(…)
        return func.id in emits
    if not isinstance(func, ast.Attribute):
        return False
    receiver = func.value
    if func.attr in MODEL_WRITES:  # User.create(…), models.User.create(…)
        return (isinstance(receiver, ast.Name) and receiver.id in local_models) or (
            isinstance(receiver, ast.Attribute) and receiver.attr in models
        )
    if func.attr == EMIT:  # events.emit(…), panel.events.emit(…)
        return ast.unparse(receiver).rsplit(".", 1)[-1] == "events"
    return func.attr in ROW_WRITES  # row.save(…), row.delete_instance(…)


def find_writes(source: str, path: str, models: frozenset[str] = MODELS) -> list[Write]:
    """Every call in ``source`` that writes rows of ``models``, or records an event."""
    tree = ast.parse(source, filename=path)
    local_models = _local_names(tree, "panel.models", models)
    emits = _local_names(tree, "panel.events", [EMIT])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _writes(node.func, models, local_models, emits):
            found.append(Write(path, node.lineno, f"{ast.unparse(node.func)}(…)"))
    return sorted(found, key=lambda write: write.line)


def _allowed_writer(path: str) -> bool:
    return path.startswith(ACTIONS) or any(
        path == allowed or (allowed.endswith("/") and path.startswith(allowed))
        for allowed in WRITERS_ALLOWED
    )


def panel_sources() -> Iterator[tuple[str, str]]:
    """(path relative to the repository, source) of every module under panel/."""
    for file in sorted(PANEL.rglob("*.py")):
        yield file.relative_to(REPO_ROOT).as_posix(), file.read_text(encoding="utf-8")


def writes_outside_actions(sources: Iterable[tuple[str, str]]) -> list[Write]:
    """The writes of ``sources`` made neither by an action nor by an allowed module."""
    return [
        write
        for path, source in sources
        if not _allowed_writer(path)
        for write in find_writes(source, path)
    ]


def writers_report(found: list[Write]) -> str:
    """The failure message: each write, and what to do about it."""
    lines = "\n".join(f"  {write}" for write in found)
    return (
        f"{len(found)} database write(s) outside panel/actions/:\n{lines}\n"
        "Move each into an action in panel/actions/ (permission → validate → write → event → "
        "enqueue) and call that action instead."
    )


def test_only_the_actions_write_rows():
    found = writes_outside_actions(panel_sources())
    assert not found, writers_report(found)


def test_the_writers_check_finds_a_write_outside_the_actions():
    """The check above can fail: a module writing rows itself is caught, line by line."""
    snippet = (
        "from panel.events import emit\n"
        "from panel.models import Deployment, Host as Machine\n"
        "\n"
        "def handler(row):\n"
        "    Deployment.update(status='failed').execute()\n"
        "    Machine.create(name='n1')\n"
        "    row.save()\n"
        "    emit('v1.host.added', {})\n"
        "    Deployment.select().where(Deployment.id == 1)\n"  # a read: not reported
    )
    sources = [("panel/web/example.py", snippet), ("panel/actions/example.py", snippet)]
    found = writes_outside_actions(sources)
    assert [str(write) for write in found] == [
        "panel/web/example.py:5: Deployment.update(…)",
        "panel/web/example.py:6: Machine.create(…)",
        "panel/web/example.py:7: row.save(…)",
        "panel/web/example.py:8: emit(…)",
    ]
    report = writers_report(found)
    assert "panel/web/example.py:6: Machine.create(…)" in report
    assert "into an action in panel/actions/" in report


def test_the_models_are_known():
    """The rule above checks the models panel/models.py really defines."""
    assert {"User", "App", "Deployment", "Host", "ProvisionRun", "Event"} <= MODELS
    assert "BaseModel" in MODELS and "JSONField" not in MODELS


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------

# Highest first. A module may import from its own layer and the layers below it, never above.
LAYERS: tuple[tuple[str, ...], ...] = (
    # Entry points; `panel.__main__` (`python -m panel`) runs the CLI, so it sits with it.
    ("panel.run", "panel.cli", "panel.web", "panel.__main__"),
    # What runs on its own: the follower and the worker's jobs, and the build log collectors the
    # follower starts (higher layers are looked up first: this wins over the pure `panel.logs`).
    ("panel.follow", "panel.reconcile", "panel.logs.collect", "panel.logs.runtime"),
    # The only writers of desired state.
    ("panel.actions",),
    # I/O and storage; `panel.migrations`, the database's history, belongs with it.
    (
        "panel.drivers",
        "panel.events",
        "panel.queue",
        "panel.notify",
        "panel.db",
        "panel.migrations",
        "panel.models",
        "panel.crypto",
        "panel.lockout",
        "panel.cluster",
        "panel.cluster_access",
        "panel.namespaces",
        "panel.health",
        "panel.metrics",
        "panel.metrics_files",
        "panel.backup",
    ),
    # The pure core; `panel` itself (panel/__init__.py, the version only) imports nothing.
    (
        "panel.schema",
        "panel.spec",
        "panel.validation",
        "panel.render",
        "panel.logs",
        "panel.live",
        "panel.states",
        "panel.config",
        "panel.releases",
        "panel.host_keys",
        "panel.domains_state",
        "panel.backup_manifest",
        "panel",
    ),
)
# (importer, imported) pairs that go upwards for now, and why.
UPWARD_ALLOWED: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> int | None:
    """The index in LAYERS of a module's layer; None when it is in none.

    A listed name covers its submodules too, except ``panel`` itself, which covers only
    panel/__init__.py (else every module would be listed).
    """
    for index, layer in enumerate(LAYERS):
        for name in layer:
            if module == name or ("." in name and module.startswith(name + ".")):
                return index
    return None


def _submodule(package: str, name: str) -> str:
    """``from package import name``: the module ``package.name`` if there is one, else the
    package (``name`` is one of its attributes)."""
    where = REPO_ROOT.joinpath(*package.split("."), name)
    return f"{package}.{name}" if where.is_dir() or where.with_suffix(".py").exists() else package


def module_name(path: str) -> str:
    """``panel/web/api.py`` → ``panel.web.api``; a package's ``__init__`` is the package."""
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every ``panel`` import in ``source``, wherever it is (functions,
    ``if TYPE_CHECKING:`` blocks); relative imports are resolved against ``module``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            # `from panel import web` imports panel.web, `from panel.web import api` panel.web.api,
            # `from panel.web import bp` panel.web.
            names = list(dict.fromkeys(_submodule(base, alias.name) for alias in node.names))
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] == "panel"]
    return found


@dataclass(frozen=True)
class Upward:
    """An import from a lower layer of a higher one."""

    path: str
    line: int
    importer: str
    imported: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}"


def upward_imports(sources: Iterable[tuple[str, str]]) -> tuple[list[Upward], list[str]]:
    """(imports that go up a layer, modules in no layer) of ``sources``."""
    upward, unlisted = [], []
    for path, source in sources:
        importer = module_name(path)
        mine = layer_of(importer)
        if mine is None:
            unlisted.append(f"{path} ({importer})")
            continue
        for line, imported in imported_modules(source, importer, path.endswith("__init__.py")):
            theirs = layer_of(imported)
            if theirs is None:
                unlisted.append(f"{path}:{line}: {imported}")
            elif theirs < mine:
                upward.append(Upward(path, line, importer, imported))
    return upward, unlisted


def layers_report(upward: list[Upward]) -> str:
    """The failure message: each import that goes up, and what to do about it."""
    lines = "\n".join(f"  {found}" for found in upward)
    return (
        f"{len(upward)} import(s) from a lower layer of a higher one:\n{lines}\n"
        "Layers, highest first: "
        + " > ".join("[" + ", ".join(layer) + "]" for layer in LAYERS)
        + ".\nMove the code it needs down to the importer's layer (or lower), or pass it in."
    )


def test_imports_go_down_the_layers():
    upward, unlisted = upward_imports(panel_sources())
    assert not unlisted, f"put these modules in a layer of LAYERS: {unlisted}"
    known = {(found.importer, found.imported) for found in upward}
    stale = sorted(set(UPWARD_ALLOWED) - known)
    assert not stale, f"these imports are gone: remove them from UPWARD_ALLOWED: {stale}"
    found = [item for item in upward if (item.importer, item.imported) not in UPWARD_ALLOWED]
    assert not found, layers_report(found)


def test_the_layers_check_finds_an_import_that_goes_up():
    """The check above can fail: an import inside a function and a relative one are caught."""
    snippet = (
        "from panel.models import App\n"  # down: fine
        "from . import common\n"  # same layer: fine
        "from panel import spec\n"  # the pure core: fine
        "\n"
        "def act():\n"
        "    from panel.web.access import abort_for\n"
        "    import panel.reconcile.jobs\n"
        "    from ..web import api\n"
    )
    upward, unlisted = upward_imports([("panel/actions/example.py", snippet)])
    assert not unlisted
    assert [str(found) for found in upward] == [
        "panel/actions/example.py:6: panel.actions.example imports panel.web.access",
        "panel/actions/example.py:7: panel.actions.example imports panel.reconcile.jobs",
        "panel/actions/example.py:8: panel.actions.example imports panel.web.api",
    ]
    assert "Move the code it needs down" in layers_report(upward)
    _, unlisted = upward_imports([("panel/nowhere.py", "import panel.models\n")])
    assert unlisted == ["panel/nowhere.py (panel.nowhere)"]


def test_every_layer_prefix_names_a_module():
    """A typo in LAYERS would silently leave modules unchecked."""
    for layer in LAYERS:
        for prefix in layer:
            where = REPO_ROOT.joinpath(*prefix.split("."))
            assert where.is_dir() or where.with_suffix(".py").exists(), prefix
