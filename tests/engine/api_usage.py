"""Every TensorRT name the package uses, read from its source: ``trt.<name>``, enum members, methods, properties.

The TensorRT module is whatever the code calls ``trt`` (a local, a parameter, ``ctx.trt``) or gets from
``trt_api.get_trt()``. From there types follow the library's own surface: ``trt.Builder(...)`` is a
``Builder``, ``builder.create_network(...)`` returns what the surface says ``create_network`` returns, and so
on through assignments. Parameters and attributes named like the TensorRT object they always hold
(:data:`NAMED`) are typed by their name. Dynamic lookups (``getattr(trt.ActivationType, kind)``) are resolved
by following ``kind`` to the string constants callers pass; what cannot be resolved is reported, not skipped.

Each use records where it is, whether it was only probed (``hasattr`` / ``getattr`` with a default), and for
calls the number of positional arguments and the keyword names, so signatures are checked too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SOURCES = (ROOT / "fx2trt_pipeline", ROOT / "converters")
MODULE = "<trt>"
TRT_STAGES = tuple(
    f"fx2trt_pipeline/{part}" for part in ("trt_api.py", "trt_types.py", "network/", "executor/", "engine/", "plan/")
) + ("converters/",)
#: Names (of parameters, locals without a typed assignment, attributes) that always hold one TensorRT object.
NAMED = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "net": "INetworkDefinition",
    "config": "IBuilderConfig",
    "profile": "IOptimizationProfile",
    "runtime": "Runtime",
    "parser": "OnnxParser",
    "cuda_engine": "ICudaEngine",
    "_engine": "ICudaEngine",
    "context": "IExecutionContext",
    "_context": "IExecutionContext",
    "runtime_config": "IRuntimeConfig",
    "_runtime_config": "IRuntimeConfig",
    "inspector": "EngineInspector",
}


@dataclass(frozen=True)
class Use:
    """One use of a TensorRT name: ``Builder`` (a module name) or ``Builder.create_network`` (a member)."""

    name: str
    where: str
    probed: bool = False  # hasattr(x, "n") / getattr(x, "n", default): may be absent on purpose
    call: tuple[int, tuple[str, ...]] | None = None  # (positional count, keyword names); None: not called


@dataclass
class Dynamic:
    """``getattr(<trt class>, <expression>)``: the names the expression can take, or why they are unknown."""

    owner: str  # "" for the module itself
    where: str
    names: set[str] = field(default_factory=set)
    unresolved: str | None = None


def source_files() -> list[Path]:
    """The package's Python files (fx2trt_pipeline/ and converters/)."""
    return sorted(p for root in SOURCES for p in root.rglob("*.py"))


class _Functions:
    """Every function definition and call site of the package, for following dynamic names to their callers."""

    def __init__(self, trees: dict[str, ast.Module]) -> None:
        self.defs: dict[str, list[ast.FunctionDef]] = {}
        self.calls: dict[str, list[tuple[ast.Call, ast.AST | None, str]]] = {}
        self.tables: dict[str, dict[str, list[str]]] = {}  # module-level literal tables: file -> name -> strings
        for where, tree in trees.items():
            self.tables[where] = _tables(tree)
            for fn in ast.walk(tree):
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.defs.setdefault(fn.name, []).append(fn)
            for scope, node in _scoped(tree):
                if isinstance(node, ast.Call):
                    name = _callee(node)
                    if name:
                        self.calls.setdefault(name, []).append((node, scope, where))


def _tables(tree: ast.Module) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        value = getattr(node, "value", None)
        for target in targets:
            if isinstance(target, ast.Name) and isinstance(value, (ast.Dict, ast.Tuple, ast.List, ast.Set)):
                items = value.values if isinstance(value, ast.Dict) else value.elts
                out[target.id] = [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]
    return out


def _scoped(tree: ast.AST, scope: ast.AST | None = None) -> Iterator[tuple[ast.AST | None, ast.AST]]:
    for child in ast.iter_child_nodes(tree):
        yield scope, child
        inner = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else scope
        yield from _scoped(child, inner)


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _is_get_trt(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and _callee(node) == "get_trt"


class Collector:
    """Walks the package with a library surface (for return and property types) and records every use."""

    def __init__(self, surface: dict[str, Any], sources: dict[str, str] | None = None) -> None:
        """``sources``: file name -> source text to read instead of the package (tests of the collector)."""
        self.surface = surface
        self.uses: list[Use] = []
        self.dynamic: list[Dynamic] = []
        if sources is None:
            sources = {str(p.relative_to(ROOT)): p.read_text() for p in source_files()}
        self.trees = {where: ast.parse(text, where) for where, text in sources.items()}
        self.functions = _Functions(self.trees)
        #: Where names like ``config`` mean a TensorRT object: the stages that handle TensorRT objects.
        self.trt_files = {where for where in self.trees if where.startswith(TRT_STAGES)}

    # -- types --------------------------------------------------------------------------------------------

    def _member_type(self, cls: str, name: str) -> str | None:
        from tests.engine.api_surface import member

        entry = member(self.surface, cls, name)
        return None if entry is None else entry.get("type")

    def _class(self, name: str | None) -> str | None:
        return name if name in self.surface["classes"] else None

    def type_of(self, node: ast.AST, env: dict[str, str], where: str) -> str | None:
        """The TensorRT type of an expression (``MODULE``, ``class:X`` for the class object, ``X`` for an instance)."""
        named = NAMED if where in self.trt_files else {}
        if isinstance(node, ast.Name):
            return MODULE if node.id == "trt" else env.get(node.id) or named.get(node.id)
        if _is_get_trt(node):
            return MODULE
        if isinstance(node, ast.Attribute):
            if node.attr == "trt":
                return MODULE
            owner = self.type_of(node.value, env, where)
            if owner is None:
                return named.get(node.attr)  # ctx.network, self._context, owner.runtime
            return self._attribute(owner, node.attr, node, where, probed=False)
        if isinstance(node, ast.Call):
            return self._call(node, env, where)
        return None

    def _attribute(
        self, owner: str, attr: str, node: ast.AST, where: str, probed: bool, call: Any = None
    ) -> str | None:
        """Record ``owner.attr``; the type it has (a class object ``class:X`` or an instance ``X``)."""
        if attr.startswith("__") and attr != "__version__":
            return None
        at = f"{where}:{getattr(node, 'lineno', 0)}"
        if owner == MODULE:
            self.uses.append(Use(attr, at, probed, call))
            return f"class:{attr}" if self._class(attr) else self._class(self.surface["module"].get(attr))
        cls = owner.removeprefix("class:")
        self.uses.append(Use(f"{cls}.{attr}", at, probed, call))
        found = self._member_type(cls, attr)
        if found == f"{cls}.{attr}":
            return f"class:{found}"  # a nested class, e.g. ILogger.Severity
        return self._class(found)

    def _call(self, node: ast.Call, env: dict[str, str], where: str) -> str | None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(node.args) >= 2:
            return self._getattr(node, env, where)
        if not isinstance(func, ast.Attribute):
            return None
        owner = self.type_of(func.value, env, where)
        if owner is None:
            return None
        starred = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
        arity = None if starred else (len(node.args), tuple(str(k.arg) for k in node.keywords))
        result = self._attribute(owner, func.attr, func, where, probed=False, call=arity)
        if result and result.startswith("class:"):  # constructing a TensorRT object
            self.uses.append(Use(f"{result[6:]}.__init__", f"{where}:{func.lineno}", False, arity))
            return result[6:]
        return result

    def _getattr(self, node: ast.Call, env: dict[str, str], where: str) -> str | None:
        owner = self.type_of(node.args[0], env, where)
        if owner is None:
            return None
        probed = node.func.id == "hasattr" or len(node.args) > 2  # type: ignore[attr-defined]
        name = node.args[1]
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            return self._attribute(owner, name.value, node, where, probed)
        dynamic = Dynamic("" if owner == MODULE else owner.removeprefix("class:"), f"{where}:{node.lineno}")
        names = self.resolve(name, self._scope_of(node, where), where, depth=0)
        if names is None:
            dynamic.unresolved = ast.unparse(name)
        else:
            dynamic.names = names
            for value in names:
                self._attribute(owner, value, node, where, probed)
        self.dynamic.append(dynamic)
        return None

    # -- following a dynamic name to its string constants ------------------------------------------------

    def _scope_of(self, node: ast.AST, where: str) -> ast.AST | None:
        for scope, child in _scoped(self.trees[where]):
            if child is node:
                return scope
        return None

    def resolve(self, expr: ast.AST, scope: ast.AST | None, where: str, depth: int) -> set[str] | None:
        """The strings ``expr`` can be, following parameters to their callers (``None``: not all known)."""
        if depth > 4:
            return None
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {expr.value}
        if isinstance(expr, ast.IfExp):
            a, b = self.resolve(expr.body, scope, where, depth), self.resolve(expr.orelse, scope, where, depth)
            return None if a is None or b is None else a | b
        if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name):
            table = self.functions.tables[where].get(expr.value.id)
            return set(table) if table else None
        if isinstance(expr, ast.Name) and isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return self._resolve_name(expr.id, scope, where, depth)
        return None

    def _resolve_name(self, name: str, fn: ast.FunctionDef, where: str, depth: int) -> set[str] | None:
        assigned = [
            n.value
            for n in ast.walk(fn)
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)
        ]
        if assigned:
            found = [self.resolve(v, fn, where, depth + 1) for v in assigned]
            return None if any(f is None for f in found) else set().union(*found)
        params = [*fn.args.posonlyargs, *fn.args.args]
        index = next((i for i, a in enumerate(params) if a.arg == name), None)
        if index is None:
            return None
        defaults = dict(zip([a.arg for a in params][len(params) - len(fn.args.defaults) :], fn.args.defaults))
        names: set[str] = set()
        if name in defaults:
            default = self.resolve(defaults[name], None, where, depth + 1)
            if default is None:
                return None
            names |= default
        sites = self.functions.calls.get(fn.name, [])
        for call, scope, site in sites:
            arg = next((k.value for k in call.keywords if k.arg == name), None)
            shift = 1 if isinstance(call.func, ast.Attribute) and params and params[0].arg == "self" else 0
            if arg is None and index - shift < len(call.args):
                arg = call.args[index - shift]
            if arg is None:
                continue  # the default applies
            found = self.resolve(arg, scope, site, depth + 1)
            if found is None:
                return None
            names |= found
        return names if sites or name in defaults else None

    # -- walking ----------------------------------------------------------------------------------------------

    def collect(self) -> Collector:
        """Record every use in the package; returns ``self``."""
        for where, tree in self.trees.items():
            self._body(tree.body, {}, where)
        return self

    def _body(self, statements: list[ast.stmt], env: dict[str, str], where: str) -> None:
        for stmt in statements:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._body(stmt.body, {}, where)
                continue
            if isinstance(stmt, ast.ClassDef):
                for base in stmt.bases:
                    self.type_of(base, env, where)
                self._body(stmt.body, {}, where)
                continue
            self._statement(stmt, env, where)

    def _statement(self, stmt: ast.stmt, env: dict[str, str], where: str) -> None:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            pairs = isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Tuple)
            if pairs and len(target.elts) == len(stmt.value.elts):  # a, b = x, y
                for name, value in zip(target.elts, stmt.value.elts):
                    self._statement(ast.Assign(targets=[name], value=value, lineno=stmt.lineno), env, where)
                return
            kind = self.type_of(stmt.value, env, where)
            if isinstance(target, ast.Name):
                if kind is not None:
                    env[target.id] = kind
            else:
                self._expressions(target, env, where)  # an attribute set (layer.axis = 0) is a use
            self._expressions(stmt.value, env, where, typed=True)
            return
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.stmt):
                self._body([child], env, where)
            elif isinstance(child, ast.ExceptHandler):
                self._body(child.body, env, where)
            elif isinstance(child, ast.expr):
                self._expressions(child, env, where)
            else:  # withitem, comprehension, match_case, keyword...
                for expr in ast.iter_child_nodes(child):
                    if isinstance(expr, ast.expr):
                        self._expressions(expr, env, where)
                    elif isinstance(expr, ast.stmt):
                        self._body([expr], env, where)

    def _expressions(self, expr: ast.expr, env: dict[str, str], where: str, typed: bool = False) -> None:
        """Type ``expr`` (unless ``typed``) and every sub-expression its own typing did not reach."""
        reached: set[int] = set()

        def mark(node: ast.AST) -> None:
            reached.add(id(node))
            if isinstance(node, ast.Attribute):
                mark(node.value)
            elif isinstance(node, ast.Call):
                mark(node.func)
                if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr") and node.args:
                    mark(node.args[0])

        if not typed:
            self.type_of(expr, env, where)
        mark(expr)
        for node in ast.walk(expr):
            if id(node) in reached or not isinstance(node, (ast.Attribute, ast.Call, ast.Name)):
                continue
            self.type_of(node, env, where)
            mark(node)
