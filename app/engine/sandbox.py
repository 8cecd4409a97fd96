"""A restricted evaluator for the Python expressions and scripts inside uploaded BPMN.

Admins draw processes in the browser, so gateway conditions, script tasks, timer expressions,
message correlations and service-task parameters are untrusted code. Python's own `eval` and
`exec` cannot be made safe (every object leads to `object.__subclasses__()`), so nothing the
user writes is ever compiled to bytecode here: the source is parsed with `ast`, checked against
a whitelist of node types, names, attributes and functions, and then *interpreted* node by node
by `_Interpreter`. That gives three guarantees the stock engine lacks:

- no escape: only whitelisted builtins, caller-supplied helpers and a short list of methods of
  plain data types can be called; no name or attribute starting with `_` exists; there is no
  import, lambda, def, class, `open`, `getattr`, `type`, `str.format` and so no way to reach
  modules, frames, files, sockets or processes;
- bounded time: every node evaluated and every element a builtin walks costs a step, the
  budget is fixed (and a wall-clock deadline backs it up), so `while True: pass` stops;
- bounded memory: sizes of produced strings, collections and integers are checked *before*
  the operations that can blow up (`'a' * 10**9`, `10**10**10`, `x << 10**9`, `sep.join`,
  `str.replace`) and after everything else.

Static problems (found without running anything) raise `ForbiddenExpression`; failures while
running (a missing key, a budget spent) raise `ExpressionFailed`.
"""

from __future__ import annotations

import ast
import copy
import datetime as _dt
import functools
import operator
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = [
    "DEFAULT_LIMITS",
    "SAFE_BUILTIN_NAMES",
    "ExpressionFailed",
    "ForbiddenExpression",
    "Limits",
    "SandboxError",
    "check_expression",
    "check_script",
    "evaluate",
    "execute",
]


class SandboxError(Exception):
    """Base of every error the sandbox raises."""


class ForbiddenExpression(SandboxError):
    """The source uses a construct the sandbox does not allow (found before running it)."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("; ".join(self.problems))


class ExpressionFailed(SandboxError):
    """The expression or script failed while running (bad data, a budget spent, ...)."""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Budgets of one evaluation. The defaults are far above what a lease process needs."""

    max_steps: int = 100_000
    max_seconds: float = 2.0
    max_items: int = 10_000
    max_string: int = 100_000
    max_int_bits: int = 4_096
    max_source: int = 20_000
    max_nodes: int = 5_000
    max_depth: int = 50


DEFAULT_LIMITS = Limits()


# --- the static whitelist ----------------------------------------------------------------

_EXPRESSION_NODES: frozenset[type[ast.AST]] = frozenset({
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Store, ast.Del,
    ast.Tuple, ast.List, ast.Set, ast.Dict, ast.Starred,
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
    ast.Subscript, ast.Slice, ast.Attribute, ast.Call, ast.keyword,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension,
    ast.JoinedStr, ast.FormattedValue,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.LShift, ast.RShift, ast.BitOr, ast.BitXor, ast.BitAnd,
    ast.UAdd, ast.USub, ast.Not, ast.Invert, ast.And, ast.Or,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn,
})

_SCRIPT_NODES: frozenset[type[ast.AST]] = _EXPRESSION_NODES | {
    ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.If, ast.For, ast.While,
    ast.Break, ast.Continue, ast.Pass, ast.Delete,
}

# Why each commonly tried construct is refused, in words an admin can act on.
_WHY_NODE: dict[type[ast.AST], str] = {
    ast.Import: "import statements are not allowed: processes cannot load modules",
    ast.ImportFrom: "import statements are not allowed: processes cannot load modules",
    ast.Lambda: "lambda is not allowed: write a comprehension or a plain expression instead",
    ast.FunctionDef: "defining functions is not allowed in process scripts",
    ast.AsyncFunctionDef: "defining functions is not allowed in process scripts",
    ast.ClassDef: "defining classes is not allowed in process scripts",
    ast.Global: "global statements are not allowed",
    ast.Nonlocal: "nonlocal statements are not allowed",
    ast.With: "with statements are not allowed: there are no files or resources to open",
    ast.Try: "try statements are not allowed: a failing step should fail the task",
    ast.Raise: "raise is not allowed: use a BPMN error event",
    ast.Return: "return is not allowed in a script task",
    ast.Yield: "generators are not allowed",
    ast.YieldFrom: "generators are not allowed",
    ast.Await: "async code is not allowed",
    ast.NamedExpr: "the walrus operator := is not allowed; assign in a script task",
    ast.MatMult: "the @ operator is not allowed",
    ast.Assert: "assert is not allowed: use a gateway condition",
}

_FORBIDDEN_FUNCTIONS: dict[str, str] = {
    name: "the sandbox has no file, network, process or interpreter access"
    for name in (
        "open", "exec", "eval", "compile", "__import__", "getattr", "setattr", "delattr",
        "hasattr", "globals", "locals", "vars", "dir", "type", "object", "super", "input",
        "print", "breakpoint", "help", "id", "memoryview", "bytearray", "classmethod",
        "staticmethod", "property", "exit", "quit", "iter", "next", "callable", "format",
        "isinstance", "issubclass", "repr", "ascii", "chr", "ord", "hash", "pow", "divmod",
        "map", "filter", "frozenset", "bytes", "slice", "complex", "bin", "hex", "oct",
    )
}
_FORBIDDEN_FUNCTIONS["format"] = "use an f-string instead"
_FORBIDDEN_FUNCTIONS["pow"] = "use the ** operator instead"

# Attribute names that may be read (and so called) per data type. Everything else, and every
# name starting with an underscore, does not exist for sandboxed code.
_STR_METHODS = frozenset({
    "lower", "upper", "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines",
    "startswith", "endswith", "find", "rfind", "count", "index", "isdigit", "isalpha",
    "isalnum", "isspace", "isupper", "islower", "isdecimal", "isnumeric", "title",
    "capitalize", "casefold", "partition", "rpartition", "removeprefix", "removesuffix",
    "join", "replace",
})
_DICT_METHODS = frozenset({
    "get", "keys", "values", "items", "copy", "update", "pop", "setdefault",
})
_LIST_METHODS = frozenset({
    "append", "extend", "pop", "insert", "remove", "index", "count", "copy", "sort",
    "reverse",
})
_TUPLE_METHODS = frozenset({"index", "count"})
_SET_METHODS = frozenset({
    "add", "discard", "remove", "union", "intersection", "difference", "issubset",
    "issuperset", "copy",
})
_DATETIME_ATTRS = frozenset({
    "isoformat", "year", "month", "day", "hour", "minute", "second", "microsecond",
    "weekday", "timestamp", "date", "tzinfo",
})
_DATE_ATTRS = frozenset({"isoformat", "year", "month", "day", "weekday"})
_TIMEDELTA_ATTRS = frozenset({"total_seconds", "days", "seconds", "microseconds"})

_ATTRS_BY_TYPE: tuple[tuple[type, frozenset[str]], ...] = (
    (str, _STR_METHODS),
    (dict, _DICT_METHODS),
    (list, _LIST_METHODS),
    (tuple, _TUPLE_METHODS),
    (set, _SET_METHODS),
    (_dt.datetime, _DATETIME_ATTRS),  # before date: datetime is a date subclass
    (_dt.date, _DATE_ATTRS),
    (_dt.timedelta, _TIMEDELTA_ATTRS),
)
_MUTATING_METHODS = frozenset({
    "append", "extend", "pop", "insert", "remove", "sort", "reverse", "update", "setdefault",
    "add", "discard",
})
# read-only methods whose cost grows with the receiver's size (paid for by weighing it)
_SCANNING_METHODS = frozenset({
    "index", "count", "copy", "union", "intersection", "difference", "issubset", "issuperset",
    "remove",
})
_ALLOWED_ATTRS = frozenset().union(*(names for _, names in _ATTRS_BY_TYPE))

SAFE_BUILTIN_NAMES = frozenset({
    "len", "str", "int", "float", "bool", "min", "max", "sum", "abs", "round", "sorted",
    "list", "dict", "set", "tuple", "range", "any", "all", "enumerate", "zip", "reversed",
})


def _where(node: ast.AST) -> str:
    line = getattr(node, "lineno", None)
    return f" (line {line}, column {getattr(node, 'col_offset', 0) + 1})" if line else ""


def _static_problems(tree: ast.AST, allowed: frozenset[type[ast.AST]],
                     functions: frozenset[str], limits: Limits) -> list[str]:
    problems: list[str] = []
    count = 0
    # (node, depth) pairs; iterative so a deeply nested source cannot exhaust our stack
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > limits.max_nodes:
            problems.append(f"the code is too long: more than {limits.max_nodes} syntax nodes")
            break
        if depth > limits.max_depth:
            problems.append(f"the code is nested too deeply (more than {limits.max_depth} levels)")
            break
        kind = type(node)
        if kind not in allowed:
            if kind in _WHY_NODE:
                problems.append(f"{_WHY_NODE[kind]}{_where(node)}")
            else:
                problems.append(f"{kind.__name__} is not allowed{_where(node)}: only simple "
                                f"expressions, assignments, if/for/while and comprehensions "
                                f"can be used" + ("" if allowed is _SCRIPT_NODES else
                                                  " (and no statements in an expression)"))
            continue
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                problems.append(f"name `{node.id}` is not allowed{_where(node)}: names starting "
                                f"with an underscore are private to the engine")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                problems.append(f"attribute `.{node.attr}` is not allowed{_where(node)}: "
                                f"attributes starting with an underscore reach the interpreter")
            elif node.attr not in _ALLOWED_ATTRS:
                problems.append(f"attribute `.{node.attr}` is not allowed{_where(node)}: only "
                                f"plain methods of strings, dicts, lists, sets and dates "
                                f"(such as .get, .items, .lower, .split) can be used")
            elif allowed is _EXPRESSION_NODES and node.attr in _MUTATING_METHODS:
                problems.append(f"method `.{node.attr}` changes data{_where(node)}: expressions "
                                f"only read; change data in a script task")
            if not isinstance(node.ctx, ast.Load):
                problems.append(f"assigning to attribute `.{node.attr}` is not allowed"
                                f"{_where(node)}: assign to a variable or a dict key instead")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                if func.id in _FORBIDDEN_FUNCTIONS and func.id not in functions:
                    problems.append(f"`{func.id}()` is not available{_where(node)}: "
                                    f"{_FORBIDDEN_FUNCTIONS[func.id]}")
                elif (func.id not in SAFE_BUILTIN_NAMES and func.id not in functions
                        and not func.id.startswith("_")):
                    known = ", ".join(sorted(SAFE_BUILTIN_NAMES | functions))
                    problems.append(f"function `{func.id}` is not available{_where(node)}: "
                                    f"the functions that can be called are {known}")
            elif not isinstance(func, ast.Attribute):
                problems.append(f"calling the result of an expression is not allowed"
                                f"{_where(node)}: call a function or a method by name")
        elif isinstance(node, ast.comprehension) and node.is_async:
            problems.append(f"async comprehensions are not allowed{_where(node)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            if len(node.value) > limits.max_string:
                problems.append(f"a literal is longer than {limits.max_string} characters"
                                f"{_where(node)}")
        # reversed, so problems come out in source order
        stack.extend((child, depth + 1) for child in reversed(list(ast.iter_child_nodes(node))))
    return problems


@functools.lru_cache(maxsize=2048)
def _compile(src: str, mode: str, functions: frozenset[str],
             limits: Limits) -> tuple[ast.AST | None, tuple[str, ...]]:
    """Parse and check once per distinct source; the interpreter never mutates the tree."""
    if not isinstance(src, str):
        return None, ("the expression must be text",)
    if len(src) > limits.max_source:
        return None, (f"the code is longer than {limits.max_source} characters",)
    if mode == "eval" and not src.strip():
        return None, ("the expression is empty",)
    try:
        tree = ast.parse(src.strip() if mode == "eval" else src, mode=mode)
    except SyntaxError as err:
        return None, (f"syntax error on line {err.lineno}: {err.msg}",)
    except (ValueError, MemoryError, RecursionError) as err:
        return None, (f"the code cannot be parsed: {type(err).__name__}",)
    allowed = _EXPRESSION_NODES if mode == "eval" else _SCRIPT_NODES
    return tree, tuple(_static_problems(tree, allowed, functions, limits))


def check_expression(src: str, functions: Iterable[str] = (), *,
                     limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Every static problem of an expression (empty when it is allowed). Runs nothing."""
    return list(_compile(src, "eval", frozenset(functions), limits)[1])


def check_script(src: str, functions: Iterable[str] = (), *,
                 limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Every static problem of a script (statements). Runs nothing."""
    return list(_compile(src, "exec", frozenset(functions), limits)[1])


def evaluate(src: str, names: Mapping[str, Any], *,
             helpers: Mapping[str, Callable[..., Any]] | None = None,
             limits: Limits = DEFAULT_LIMITS) -> Any:
    """Evaluate an expression over `names` (read-only) and return its value."""
    helpers = helpers or {}
    tree, problems = _compile(src, "eval", frozenset(helpers), limits)
    if problems or tree is None:
        raise ForbiddenExpression(problems)
    interp = _Interpreter(dict(names), helpers, limits)
    assert isinstance(tree, ast.Expression)
    return interp.run_expression(tree.body)


def execute(src: str, names: Mapping[str, Any], *,
            helpers: Mapping[str, Callable[..., Any]] | None = None,
            limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Run a script over a deep copy of `names`; return the variables afterwards.

    The caller's data is left untouched, so a script that fails half way changes nothing.
    """
    helpers = helpers or {}
    tree, problems = _compile(src or "", "exec", frozenset(helpers), limits)
    if problems or tree is None:
        raise ForbiddenExpression(problems)
    try:
        scope = copy.deepcopy(dict(names))
    except Exception as err:  # noqa: BLE001 - any object that refuses to be copied
        raise ExpressionFailed(f"the task data cannot be copied: {err}") from err
    interp = _Interpreter(scope, helpers, limits)
    assert isinstance(tree, ast.Module)
    interp.run_script(tree.body)
    functions = list(helpers.values())
    return {k: v for k, v in interp.scope.items()
            if not isinstance(v, _Builtin | _Method) and not any(v is f for f in functions)}


# --- the interpreter ---------------------------------------------------------------------


class _Break(Exception):  # noqa: N818 - control flow, not an error
    pass


class _Continue(Exception):  # noqa: N818 - control flow, not an error
    pass


class _Builtin:
    """A whitelisted function; only these, helpers and guarded methods can be called."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self.name = name
        self.fn = fn

    def __repr__(self) -> str:
        return f"<function {self.name}>"


class _Method:
    """A method of a data value, bound and guarded."""

    __slots__ = ("obj", "name", "fn", "guarded")

    def __init__(self, obj: Any, name: str, fn: Callable[..., Any], guarded: bool) -> None:
        self.obj = obj
        self.name = name
        self.fn = fn
        self.guarded = guarded  # fn is one of our method_* guards taking obj first

    def __repr__(self) -> str:
        return f"<method {type(self.obj).__name__}.{self.name}>"


# widths and precisions of at most three digits: f"{x:>999999999}" would be a 1 GB string
_FORMAT_SPEC = re.compile(
    r"(.?[<>=^])?[+\- ]?z?#?0?(\d{1,3})?[,_]?(\.\d{1,3})?[bcdeEfFgGnosxX%]?\Z", re.DOTALL)
_DATE_FORMAT_SPEC = re.compile(r"[%A-Za-z0-9 :_./,-]{0,64}\Z")

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.LShift: operator.lshift, ast.RShift: operator.rshift,
    ast.BitOr: operator.or_, ast.BitXor: operator.xor, ast.BitAnd: operator.and_,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_,
    ast.IsNot: operator.is_not, ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_SEQUENCES = (str, bytes, list, tuple)
_CONTAINERS = (list, tuple, dict, set, frozenset)


class _Interpreter:
    def __init__(self, scope: dict[str, Any], helpers: Mapping[str, Callable[..., Any]],
                 limits: Limits) -> None:
        self.scope = scope
        self.helpers = dict(helpers)
        self.limits = limits
        self.steps = 0
        self.deadline = time.monotonic() + limits.max_seconds
        self.next_clock_check = 1024
        self.locals: list[dict[str, Any]] = []  # comprehension scopes, innermost last

    @functools.cached_property
    def builtins(self) -> dict[str, _Builtin]:
        # Built on first use: most expressions of a diagram only read data.
        return self._make_builtins()

    # -- budgets --

    def fail(self, message: str) -> NoReturn:
        raise ExpressionFailed(message)

    def tick(self, cost: int = 1) -> None:
        self.steps += cost
        if self.steps > self.limits.max_steps:
            self.fail(f"the expression ran too long (more than {self.limits.max_steps} steps)")
        if self.steps >= self.next_clock_check:  # reading the clock every step costs too much
            self.next_clock_check = self.steps + 1024
            if time.monotonic() > self.deadline:
                self.fail(f"the expression ran longer than {self.limits.max_seconds} s")

    def check_size(self, value: Any) -> Any:
        lim = self.limits
        if isinstance(value, str | bytes):
            if len(value) > lim.max_string:
                self.fail(f"a string grew longer than {lim.max_string} characters")
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if value.bit_length() > lim.max_int_bits:
                self.fail(f"a number grew larger than {lim.max_int_bits} bits")
        elif isinstance(value, _CONTAINERS):
            if len(value) > lim.max_items:
                self.fail(f"a collection grew larger than {lim.max_items} items")
        return value

    def allocated(self, value: Any) -> Any:
        """Check a freshly built value and pay for its memory (a step per 16 items/chars).

        Sizes alone do not bound memory: `[[1] * 10000 for i in range(10000)]` builds many
        lists below the cap. Charging allocations to the step budget bounds the total.
        """
        if isinstance(value, (*_CONTAINERS, str, bytes)):
            self.check_size(value)
            self.tick(len(value) >> 4)
        elif isinstance(value, int):
            self.check_size(value)
        return value

    def weigh(self, value: Any) -> int:
        """Walk a value (charging a step per element) and return its printed size, roughly.

        C-level operations (comparing, hashing, sorting, printing) touch every element of
        nested data; shared references can make that far more than any single length, so
        they are paid for here, before Python does the work.
        """
        size = 0
        stack = [value]
        while stack:
            item = stack.pop()
            self.tick()
            if isinstance(item, str | bytes):
                size += len(item) + 2
                self.tick(len(item) >> 10)
            elif isinstance(item, dict):
                size += 2
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, _CONTAINERS):
                size += 2
                stack.extend(item)
            elif isinstance(item, int) and not isinstance(item, bool):
                size += item.bit_length() // 3 + 2
            else:
                size += 32
            if size > self.limits.max_string * 4:
                # far beyond anything printable; stop walking, the caller will refuse it
                return size
        return size

    def printable(self, value: Any) -> None:
        if self.weigh(value) > self.limits.max_string:
            self.fail(f"the text of a value would be longer than {self.limits.max_string} "
                      f"characters")

    # -- names --

    def lookup(self, node: ast.Name) -> Any:
        name = node.id
        for frame in reversed(self.locals):
            if name in frame:
                return frame[name]
        if name in self.scope:
            return self.scope[name]
        if name in self.helpers:
            return self.helpers[name]
        if name in SAFE_BUILTIN_NAMES and name in self.builtins:
            return self.builtins[name]
        self.fail(f"name '{name}' is not defined")

    def store(self, target: ast.expr, value: Any) -> None:
        self.tick()
        if isinstance(target, ast.Name):
            frame = self.locals[-1] if self.locals else self.scope
            frame[target.id] = value
        elif isinstance(target, ast.Subscript):
            container = self.eval(target.value)
            key = self.eval(target.slice)
            if isinstance(container, dict):
                self.weigh(key)
                container[key] = value
                self.check_size(container)
            elif isinstance(container, list):
                if isinstance(key, slice):
                    self.fail("assigning to a slice is not allowed")
                container[key] = value
            else:
                self.fail(f"cannot assign to an item of a {type(container).__name__}")
        elif isinstance(target, ast.Tuple | ast.List):
            items = self.as_list(value)
            if any(isinstance(t, ast.Starred) for t in target.elts):
                self.fail("starred assignment is not supported")
            if len(items) != len(target.elts):
                self.fail(f"expected {len(target.elts)} values to unpack, got {len(items)}")
            for sub, item in zip(target.elts, items, strict=True):
                self.store(sub, item)
        else:
            self.fail(f"cannot assign to {type(target).__name__}")

    def delete(self, target: ast.expr) -> None:
        self.tick()
        if isinstance(target, ast.Name):
            if target.id not in self.scope:
                self.fail(f"name '{target.id}' is not defined")
            del self.scope[target.id]
        elif isinstance(target, ast.Subscript):
            container = self.eval(target.value)
            key = self.eval(target.slice)
            if not isinstance(container, dict | list):
                self.fail(f"cannot delete an item of a {type(container).__name__}")
            try:
                del container[key]
            except (KeyError, IndexError, TypeError) as err:
                self.fail(f"cannot delete item: {type(err).__name__}: {err}")
        elif isinstance(target, ast.Tuple | ast.List):
            for sub in target.elts:
                self.delete(sub)
        else:
            self.fail(f"cannot delete {type(target).__name__}")

    # -- entry points --

    def run_expression(self, node: ast.expr) -> Any:
        try:
            return self.eval(node)
        except SandboxError:
            raise
        except RecursionError:
            raise ExpressionFailed("the expression is nested too deeply") from None
        except Exception as err:  # any data-dependent failure of the user's code
            raise ExpressionFailed(f"{type(err).__name__}: {err}") from err

    def run_script(self, body: list[ast.stmt]) -> None:
        try:
            self.exec_block(body)
        except (_Break, _Continue):
            raise ExpressionFailed("break or continue outside a loop") from None
        except SandboxError:
            raise
        except RecursionError:
            raise ExpressionFailed("the script is nested too deeply") from None
        except Exception as err:
            raise ExpressionFailed(f"{type(err).__name__}: {err}") from err

    # -- statements --

    def exec_block(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self.exec_stmt(stmt)

    def exec_stmt(self, node: ast.stmt) -> None:
        self.tick()
        if isinstance(node, ast.Expr):
            self.eval(node.value)
        elif isinstance(node, ast.Assign):
            value = self.eval(node.value)
            for target in node.targets:
                self.store(target, value)
        elif isinstance(node, ast.AugAssign):
            current = self.eval(_as_load(node.target))
            self.store(node.target, self.binop(node.op, current, self.eval(node.value)))
        elif isinstance(node, ast.If):
            self.exec_block(node.body if self.truth(self.eval(node.test)) else node.orelse)
        elif isinstance(node, ast.For):
            for item in self.as_list(self.eval(node.iter)):
                self.store(node.target, item)
                try:
                    self.exec_block(node.body)
                except _Break:
                    break
                except _Continue:
                    continue
            else:
                self.exec_block(node.orelse)
        elif isinstance(node, ast.While):
            while self.truth(self.eval(node.test)):
                try:
                    self.exec_block(node.body)
                except _Break:
                    break
                except _Continue:
                    continue
            else:
                self.exec_block(node.orelse)
        elif isinstance(node, ast.Break):
            raise _Break
        elif isinstance(node, ast.Continue):
            raise _Continue
        elif isinstance(node, ast.Pass):
            pass
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                self.delete(target)
        else:  # pragma: no cover - the static check refuses everything else
            self.fail(f"{type(node).__name__} is not allowed")

    # -- expressions --

    def truth(self, value: Any) -> bool:
        return bool(value)

    def eval(self, node: ast.expr) -> Any:
        self.tick()
        method = getattr(self, "eval_" + type(node).__name__, None)
        if method is None:  # pragma: no cover - the static check refuses everything else
            self.fail(f"{type(node).__name__} is not allowed")
        return method(node)

    def eval_Constant(self, node: ast.Constant) -> Any:  # noqa: N802
        return node.value

    def eval_Name(self, node: ast.Name) -> Any:  # noqa: N802
        return self.lookup(node)

    def elements(self, nodes: list[ast.expr]) -> list[Any]:
        out: list[Any] = []
        for elt in nodes:
            if isinstance(elt, ast.Starred):
                out.extend(self.as_list(self.eval(elt.value)))
            else:
                out.append(self.eval(elt))
            if len(out) > self.limits.max_items:
                self.check_size(out)
        return out

    def eval_Tuple(self, node: ast.Tuple) -> Any:  # noqa: N802
        return self.check_size(tuple(self.elements(node.elts)))

    def eval_List(self, node: ast.List) -> Any:  # noqa: N802
        return self.check_size(self.elements(node.elts))

    def eval_Set(self, node: ast.Set) -> Any:  # noqa: N802
        items = self.elements(node.elts)
        self.weigh(items)
        return set(items)

    def eval_Dict(self, node: ast.Dict) -> Any:  # noqa: N802
        out: dict[Any, Any] = {}
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:
                other = self.eval(value_node)
                if not isinstance(other, dict):
                    self.fail("** needs a dict")
                self.tick(len(other))
                out.update(other)
            else:
                key = self.eval(key_node)
                self.weigh(key)
                out[key] = self.eval(value_node)
            self.check_size(out)
        return out

    def eval_BinOp(self, node: ast.BinOp) -> Any:  # noqa: N802
        return self.binop(node.op, self.eval(node.left), self.eval(node.right))

    def binop(self, op: ast.operator, left: Any, right: Any) -> Any:
        lim = self.limits
        kind = type(op)
        if kind is ast.Mult:
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, _SEQUENCES) and isinstance(times, int):
                    cap = lim.max_string if isinstance(seq, str | bytes) else lim.max_items
                    if times > 0 and len(seq) * times > cap:
                        self.fail(f"repeating a sequence {times} times would exceed {cap} items")
            if _is_int(left) and _is_int(right):
                if left.bit_length() + right.bit_length() > lim.max_int_bits:
                    self.fail(f"a number would grow larger than {lim.max_int_bits} bits")
        elif kind is ast.Pow:
            if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
                if left.bit_length() * right > lim.max_int_bits:
                    self.fail(f"{left} ** {right} would be larger than {lim.max_int_bits} bits")
        elif kind is ast.LShift:
            if _is_int(left) and _is_int(right) and left.bit_length() + right > lim.max_int_bits:
                self.fail(f"a number would grow larger than {lim.max_int_bits} bits")
        elif kind is ast.Mod:
            if isinstance(left, str | bytes):
                self.fail("%-formatting is not allowed: use an f-string")
        elif kind is ast.Add:
            if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
                cap = lim.max_string if isinstance(left, str | bytes) else lim.max_items
                if len(left) + len(right) > cap:
                    self.fail(f"joining two sequences would exceed {cap} items")
                self.tick((len(left) + len(right)) >> 8)
        elif kind is ast.MatMult:  # pragma: no cover - static check
            self.fail("the @ operator is not allowed")
        if isinstance(left, dict | set) or isinstance(right, dict | set):
            self.tick(len(left) if hasattr(left, "__len__") else 1)
            self.tick(len(right) if hasattr(right, "__len__") else 1)
        return self.allocated(_BINOPS[kind](left, right))

    def eval_UnaryOp(self, node: ast.UnaryOp) -> Any:  # noqa: N802
        value = self.eval(node.operand)
        if isinstance(node.op, ast.Not):
            return not self.truth(value)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return +value
        return ~value

    def eval_BoolOp(self, node: ast.BoolOp) -> Any:  # noqa: N802
        value: Any = None
        for sub in node.values:
            value = self.eval(sub)
            truth = self.truth(value)
            if isinstance(node.op, ast.And) and not truth:
                return value
            if isinstance(node.op, ast.Or) and truth:
                return value
        return value

    def eval_Compare(self, node: ast.Compare) -> Any:  # noqa: N802
        left = self.eval(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.eval(right_node)
            if not isinstance(op, ast.Is | ast.IsNot):
                for operand in (left, right):
                    if isinstance(operand, _CONTAINERS):
                        self.weigh(operand)
                    elif isinstance(operand, str | bytes):
                        self.tick(len(operand) >> 10)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True

    def eval_IfExp(self, node: ast.IfExp) -> Any:  # noqa: N802
        return self.eval(node.body if self.truth(self.eval(node.test)) else node.orelse)

    def eval_Slice(self, node: ast.Slice) -> Any:  # noqa: N802
        parts = [None if n is None else self.eval(n) for n in (node.lower, node.upper, node.step)]
        for part in parts:
            if part is not None and not _is_int(part):
                self.fail("slice bounds must be integers")
        return slice(*parts)

    def eval_Subscript(self, node: ast.Subscript) -> Any:  # noqa: N802
        container = self.eval(node.value)
        key = self.eval(node.slice)
        if not isinstance(container, str | bytes | list | tuple | dict):
            self.fail(f"a {type(container).__name__} cannot be indexed")
        if isinstance(key, slice):
            self.tick(len(container) >> 4)
        else:
            self.weigh(key)
        return container[key]

    def eval_Attribute(self, node: ast.Attribute) -> Any:  # noqa: N802
        return self.attribute(self.eval(node.value), node.attr)

    def attribute(self, obj: Any, name: str) -> Any:
        if name.startswith("_"):  # pragma: no cover - static check
            self.fail(f"attribute `.{name}` is not allowed")
        for kind, names in _ATTRS_BY_TYPE:
            if isinstance(obj, kind):
                if name not in names:
                    break
                value = getattr(obj, name)
                if callable(value):
                    guard = getattr(self, f"method_{kind.__name__}_{name}", None)
                    if guard is not None:
                        return _Method(obj, name, guard, True)
                    return _Method(obj, name, value, False)
                return value
        self.fail(f"a {type(obj).__name__} has no usable attribute `.{name}`")

    def eval_Call(self, node: ast.Call) -> Any:  # noqa: N802
        func = self.eval(node.func)
        args = self.elements(node.args)
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                more = self.eval(kw.value)
                if not isinstance(more, dict) or not all(isinstance(k, str) for k in more):
                    self.fail("** in a call needs a dict with text keys")
                kwargs.update(more)
            else:
                kwargs[kw.arg] = self.eval(kw.value)
        return self.call(func, args, kwargs)

    def call(self, func: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if isinstance(func, _Builtin):
            for value in (*args, *kwargs.values()):
                if isinstance(value, _CONTAINERS):
                    self.weigh(value)
            result = func.fn(*args, **kwargs)
        elif isinstance(func, _Method):
            if func.guarded:
                result = func.fn(func.obj, *args, **kwargs)
            else:
                # plain methods: pay for the arguments, and for the receiver when they scan it
                receiver = (func.obj,) if func.name in _SCANNING_METHODS else ()
                for value in (*receiver, *args, *kwargs.values()):
                    if isinstance(value, _CONTAINERS):
                        self.weigh(value)
                if isinstance(func.obj, str | bytes):
                    self.tick(len(func.obj) >> 8)
                result = func.fn(*args, **kwargs)
        elif any(func is helper for helper in self.helpers.values()):
            result = func(*args, **kwargs)
        else:
            self.fail(f"a {type(func).__name__} is not a function that can be called")
        return self.allocated(result)

    def as_list(self, value: Any) -> list[Any]:
        """Materialize an iterable of data (there are no lazy iterators in the sandbox)."""
        if isinstance(value, dict):
            items = list(value.keys())
        elif isinstance(value, str | bytes | list | tuple | set | frozenset | range):
            self.check_size(value) if not isinstance(value, range) else None
            items = list(value)
        else:
            self.fail(f"a {type(value).__name__} cannot be iterated")
        self.tick(len(items) >> 4)
        return items

    def comprehension(self, generators: list[ast.comprehension],
                      emit: Callable[[], None]) -> None:
        frame: dict[str, Any] = {}
        self.locals.append(frame)
        try:
            self._loop(generators, 0, emit)
        finally:
            self.locals.pop()

    def _loop(self, generators: list[ast.comprehension], index: int,
              emit: Callable[[], None]) -> None:
        gen = generators[index]
        # the first iterable is evaluated outside the comprehension scope, as in Python
        if index == 0:
            frame = self.locals.pop()
            try:
                items = self.as_list(self.eval(gen.iter))
            finally:
                self.locals.append(frame)
        else:
            items = self.as_list(self.eval(gen.iter))
        for item in items:
            self.store(gen.target, item)
            if all(self.truth(self.eval(cond)) for cond in gen.ifs):
                if index + 1 < len(generators):
                    self._loop(generators, index + 1, emit)
                else:
                    emit()

    def eval_ListComp(self, node: ast.ListComp) -> Any:  # noqa: N802
        out: list[Any] = []

        def emit() -> None:
            out.append(self.eval(node.elt))
            self.check_size(out)

        self.comprehension(node.generators, emit)
        return out

    # generator expressions are materialized: any(x for x in y) still works, lazily nothing does
    eval_GeneratorExp = eval_ListComp  # noqa: N815

    def eval_SetComp(self, node: ast.SetComp) -> Any:  # noqa: N802
        out: set[Any] = set()

        def emit() -> None:
            value = self.eval(node.elt)
            self.weigh(value)
            out.add(value)
            self.check_size(out)

        self.comprehension(node.generators, emit)
        return out

    def eval_DictComp(self, node: ast.DictComp) -> Any:  # noqa: N802
        out: dict[Any, Any] = {}

        def emit() -> None:
            key = self.eval(node.key)
            self.weigh(key)
            out[key] = self.eval(node.value)
            self.check_size(out)

        self.comprehension(node.generators, emit)
        return out

    def eval_JoinedStr(self, node: ast.JoinedStr) -> Any:  # noqa: N802
        parts: list[str] = []
        total = 0
        for value in node.values:
            piece = self.eval(value)
            if not isinstance(piece, str):  # pragma: no cover - Python's parser guarantees it
                self.fail("f-string part is not text")
            total += len(piece)
            if total > self.limits.max_string:
                self.fail(f"an f-string grew longer than {self.limits.max_string} characters")
            parts.append(piece)
        self.tick(total >> 4)
        return "".join(parts)

    def eval_FormattedValue(self, node: ast.FormattedValue) -> Any:  # noqa: N802
        value = self.eval(node.value)
        self.printable(value)
        if node.conversion == ord("r"):
            value = repr(value)
        elif node.conversion == ord("a"):
            value = ascii(value)
        elif node.conversion == ord("s"):
            value = str(value)
        spec = "" if node.format_spec is None else self.eval(node.format_spec)
        if spec:
            pattern = _DATE_FORMAT_SPEC if isinstance(value, _dt.date) else _FORMAT_SPEC
            if not pattern.match(spec):
                self.fail(f"format specification {spec!r} is not allowed")
            if not isinstance(value, int | float | str | _dt.date | _dt.timedelta):
                self.fail(f"a {type(value).__name__} cannot be formatted with {spec!r}")
        return self.check_size(format(value, spec))

    # -- builtins --

    def _make_builtins(self) -> dict[str, _Builtin]:
        lim = self.limits

        def b_range(*args: Any) -> range:
            if not all(_is_int(a) for a in args):
                self.fail("range() needs integers")
            result = range(*args)
            if len(result) > lim.max_items:
                self.fail(f"range() larger than {lim.max_items} items is not allowed")
            return result

        def b_str(*args: Any) -> str:
            if len(args) > 1:
                self.fail("str() takes one value here")
            if args:
                self.printable(args[0])
                if isinstance(args[0], bytes | bytearray):
                    self.fail("str() of bytes is not allowed")
            return str(*args)

        def b_int(*args: Any, **kwargs: Any) -> int:
            if args and isinstance(args[0], str | bytes) and len(args[0]) > 4000:
                self.fail("int() of such a long text is not allowed")
            return int(*args, **kwargs)

        def b_float(*args: Any) -> float:
            return float(*args)

        def b_sum(items: Any, start: Any = 0) -> Any:
            values = self.as_list(items)
            for v in (start, *values):
                if not isinstance(v, int | float):
                    self.fail("sum() adds numbers only")
            return sum(values, start)

        def b_list(*args: Any) -> list[Any]:
            return self.as_list(args[0]) if args else []

        def b_tuple(*args: Any) -> tuple[Any, ...]:
            return tuple(self.as_list(args[0])) if args else ()

        def b_set(*args: Any) -> set[Any]:
            return set(self.as_list(args[0])) if args else set()

        def b_dict(*args: Any, **kwargs: Any) -> dict[Any, Any]:
            if args and not isinstance(args[0], dict):
                pairs = self.as_list(args[0])
                return dict(pairs, **kwargs)
            return dict(*args, **kwargs)

        def b_sorted(items: Any, *, reverse: bool = False) -> list[Any]:
            return sorted(self.as_list(items), reverse=bool(reverse))

        def b_minmax(fn: Callable[..., Any]) -> Callable[..., Any]:
            def inner(*args: Any, default: Any = _MISSING) -> Any:
                values = self.as_list(args[0]) if len(args) == 1 else list(args)
                if not values and default is not _MISSING:
                    return default
                return fn(values)
            return inner

        def b_enumerate(items: Any, start: int = 0) -> list[tuple[int, Any]]:
            return list(enumerate(self.as_list(items), start))

        def b_zip(*iterables: Any) -> list[tuple[Any, ...]]:
            return list(zip(*(self.as_list(i) for i in iterables), strict=False))

        def b_reversed(items: Any) -> list[Any]:
            return list(reversed(self.as_list(items)))

        def b_round(number: Any, ndigits: Any = None) -> Any:
            if ndigits is not None and (not _is_int(ndigits) or abs(ndigits) > 100):
                self.fail("round() takes a small number of digits")
            return round(number, ndigits)

        def b_len(value: Any) -> int:
            if isinstance(value, _Builtin | _Method):
                self.fail("len() of a function")
            return len(value)

        fns: dict[str, Callable[..., Any]] = {
            "len": b_len, "str": b_str, "int": b_int, "float": b_float, "bool": bool,
            "min": b_minmax(min), "max": b_minmax(max), "sum": b_sum, "abs": abs,
            "round": b_round, "sorted": b_sorted, "list": b_list, "dict": b_dict,
            "set": b_set, "tuple": b_tuple, "range": b_range,
            "any": lambda items: any(self.as_list(items)),
            "all": lambda items: all(self.as_list(items)),
            "enumerate": b_enumerate, "zip": b_zip, "reversed": b_reversed,
        }
        assert set(fns) == SAFE_BUILTIN_NAMES
        return {name: _Builtin(name, fn) for name, fn in fns.items()}

    # -- guarded methods: the ones whose output can be much larger than their input --

    def method_str_join(self, sep: str, items: Any) -> str:
        parts = self.as_list(items)
        if not all(isinstance(p, str) for p in parts):
            self.fail("join() needs a list of texts")
        total = sum(len(p) for p in parts) + len(sep) * max(len(parts) - 1, 0)
        if total > self.limits.max_string:
            self.fail(f"join() would build a text longer than {self.limits.max_string}")
        return sep.join(parts)

    def method_str_replace(self, text: str, old: Any, new: Any, count: Any = -1) -> str:
        if not isinstance(old, str) or not isinstance(new, str) or not _is_int(count):
            self.fail("replace() needs two texts and an optional count")
        hits = len(text) + 1 if old == "" else text.count(old)
        if count >= 0:
            hits = min(hits, count)
        self.tick(len(text) >> 8)
        if len(text) + hits * (len(new) - len(old)) > self.limits.max_string:
            self.fail(f"replace() would build a text longer than {self.limits.max_string}")
        return text.replace(old, new, count)

    def method_list_extend(self, target: list[Any], items: Any) -> None:
        more = self.as_list(items)
        if len(target) + len(more) > self.limits.max_items:
            self.fail(f"a list grew larger than {self.limits.max_items} items")
        target.extend(more)

    def method_list_append(self, target: list[Any], item: Any) -> None:
        if len(target) + 1 > self.limits.max_items:
            self.fail(f"a list grew larger than {self.limits.max_items} items")
        target.append(item)

    def method_list_insert(self, target: list[Any], index: Any, item: Any) -> None:
        if len(target) + 1 > self.limits.max_items:
            self.fail(f"a list grew larger than {self.limits.max_items} items")
        self.tick(len(target) >> 4)
        target.insert(index, item)

    def method_list_sort(self, target: list[Any], *, reverse: bool = False) -> None:
        self.weigh(target)
        target.sort(reverse=bool(reverse))

    def method_dict_update(self, target: dict[Any, Any], *args: Any, **kwargs: Any) -> None:
        other = dict(args[0]) if args and isinstance(args[0], dict) else dict(
            self.as_list(args[0]) if args else [])
        other.update(kwargs)
        self.weigh(other)
        if len(target) + len(other) > self.limits.max_items:
            self.fail(f"a dict grew larger than {self.limits.max_items} items")
        target.update(other)

    def method_dict_setdefault(self, target: dict[Any, Any], key: Any, default: Any = None) -> Any:
        self.weigh(key)
        if key not in target and len(target) + 1 > self.limits.max_items:
            self.fail(f"a dict grew larger than {self.limits.max_items} items")
        return target.setdefault(key, default)

    def method_dict_keys(self, target: dict[Any, Any]) -> list[Any]:
        self.tick(len(target) >> 4)
        return list(target.keys())

    def method_dict_values(self, target: dict[Any, Any]) -> list[Any]:
        self.tick(len(target) >> 4)
        return list(target.values())

    def method_dict_items(self, target: dict[Any, Any]) -> list[tuple[Any, Any]]:
        self.tick(len(target) >> 4)
        return list(target.items())

    def method_set_add(self, target: set[Any], item: Any) -> None:
        self.weigh(item)
        if len(target) + 1 > self.limits.max_items:
            self.fail(f"a set grew larger than {self.limits.max_items} items")
        target.add(item)

    def method_set_union(self, target: set[Any], *others: Any) -> set[Any]:
        lists = [self.as_list(o) for o in others]
        self.weigh(lists)
        if len(target) + sum(len(x) for x in lists) > self.limits.max_items:
            self.fail(f"a set grew larger than {self.limits.max_items} items")
        return target.union(*lists)


_MISSING = object()


def _is_int(value: Any) -> bool:
    return isinstance(value, int)


def _as_load(target: ast.expr) -> ast.expr:
    """The load form of an augmented-assignment target (x += 1 reads x first)."""
    if isinstance(target, ast.Name):
        return ast.Name(id=target.id, ctx=ast.Load())
    if isinstance(target, ast.Subscript):
        return ast.Subscript(value=target.value, slice=target.slice, ctx=ast.Load())
    raise ExpressionFailed(f"cannot update {type(target).__name__}")

