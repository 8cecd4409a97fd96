"""The restricted evaluator: what it computes, what it refuses, and how fast it gives up."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from app.engine.sandbox import (
    ExpressionFailed,
    ForbiddenExpression,
    Limits,
    SandboxError,
    check_expression,
    check_script,
    evaluate,
    execute,
)

LEASE = {"lease_request": {"subnet": "10.0.0.0/24", "client_id": "aa:bb", "hostname": "Web-1"},
         "attempts": 2, "pool": ["10.0.0.5", "10.0.0.6"], "taken": ["10.0.0.5"]}


@pytest.mark.parametrize(("src", "value"), [
    ("lease_request['subnet']", "10.0.0.0/24"),
    ("lease_request.get('requested_ip') or ''", ""),
    ("attempts < 3 and lease_request['subnet'].startswith('10.')", True),
    ("[ip for ip in pool if ip not in taken]", ["10.0.0.6"]),
    ("{ip: i for i, ip in enumerate(pool)}", {"10.0.0.5": 0, "10.0.0.6": 1}),
    ("any(ip.endswith('.6') for ip in pool)", True),
    ("f\"{lease_request['hostname'].lower()}-{attempts:03d}\"", "web-1-002"),
    ("f'{3.14159:.2f}|{attempts!r}|{\"x\":>4}'", "3.14|2|   x"),
    ("2 ** 10 + 7 // 2 - 3 % 2", 1026),
    ("sorted(set(pool + taken), reverse=True)", ["10.0.0.6", "10.0.0.5"]),
    ("max(len(p) for p in pool)", 8),
    ("min([], default=0)", 0),
    ("sum(range(5)) if attempts else -1", 10),
    ("'PT' + str(60 * attempts) + 'S'", "PT120S"),
    ("'.'.join(lease_request['subnet'].split('/')[0].split('.')[:3])", "10.0.0"),
    ("dict(a=1, **{'b': 2})", {"a": 1, "b": 2}),
    ("[*pool, 'x'][-1]", "x"),
    ("lease_request['subnet'].replace('/24', '')", "10.0.0.0"),
    ("tuple(zip([1, 2], 'ab'))", ((1, "a"), (2, "b"))),
    ("not attempts is None", True),
    ("1 < attempts <= 2", True),
    ("round(2.567, 1)", 2.6),
    ("abs(-3) + int('4') + int(float('1.5'))", 8),
    ("list(reversed(pool))[0]", "10.0.0.6"),
    ("'%' in 'a%b'", True),
])
def test_expressions_compute_like_python(src, value):
    assert check_expression(src) == []
    assert evaluate(src, LEASE) == value


def test_dates_from_helpers_expose_a_few_fields():
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    names = {"expires": when, "lease_time": dt.timedelta(hours=1)}
    assert evaluate("expires.isoformat()", names) == "2030-01-02T03:04:05+00:00"
    assert evaluate("expires.year + lease_time.total_seconds()", names) == 2030 + 3600.0
    assert evaluate("f'{expires:%Y-%m-%d}'", names) == "2030-01-02"


# Escapes that the static check refuses, before anything runs.
STATIC_ESCAPES = [
    "__import__('os')",
    "__import__('os').system('id')",
    "open('/etc/passwd')",
    "open('/etc/passwd').read()",
    "().__class__.__mro__",
    "().__class__.__mro__[1].__subclasses__()",
    "[].__class__",
    "[].__class__.__base__.__subclasses__()",
    "(1).__class__",
    "lease_request.__class__",
    "lease_request.get.__self__",
    "len.__self__",
    "str.mro()",
    "getattr(lease_request, '__class__')",
    "getattr(getattr, '__call__')",
    "setattr(lease_request, 'x', 1)",
    "vars()",
    "globals()['__builtins__']",
    "locals()",
    "dir()",
    "type(lease_request)",
    "type('X', (), {})",
    "eval('1+1')",
    "exec('import os')",
    "compile('1', 'x', 'eval')",
    "breakpoint()",
    "__builtins__",
    "_private",
    "(lambda: 1)()",
    "(lambda f: f(f))(lambda f: f(f))",
    "sorted(pool, key=lambda p: p.__class__)",
    "[f for f in [lambda: __import__]]",
    "'{0.__class__}'.format(lease_request)",
    "'{0.__class__.__init__.__globals__}'.format(lease_request)",
    "'{x}'.format_map(lease_request)",
    "f'{lease_request.__class__}'",
    "(x for x in ()).gi_frame",
    "(x for x in ()).gi_frame.f_back.f_globals",
    "[x for x in ()].__iter__()",
    "lease_request['subnet'].encode()",
    "(y := 5)",
    "pool[0]()",
    "lease_request.get('x')()",
    "lease_request.update({'a': 1})",
    "pool.append(1)",
    "pool.pop()",
    "format(1, 'x' * 10)",
    "pow(10, 10 ** 10)",
    "print('x')",
    "input()",
    "iter(pool)",
    "memoryview(b'x')",
    "os.system('id')",
    "help()",
    "unknown_function(1)",
]


@pytest.mark.parametrize("src", STATIC_ESCAPES)
def test_escapes_are_refused_statically(src):
    problems = check_expression(src)
    assert problems, src
    with pytest.raises(ForbiddenExpression) as err:
        evaluate(src, LEASE)
    assert err.value.problems == tuple(problems)


@pytest.mark.parametrize("src", [
    "import os",
    "from os import system",
    "def f():\n    return 1",
    "class X:\n    pass",
    "with open('/etc/passwd') as f:\n    x = f.read()",
    "try:\n    x = 1\nexcept Exception:\n    pass",
    "raise ValueError()",
    "global x",
    "x = lambda: 1",
    "__builtins__ = {}",
    "_x = 1",
    "lease_request.__class__ = dict",
    "lease_request.subnet = 'x'",
    "async def f():\n    pass",
    "assert False",
    "x = [].__class__.__base__",
])
def test_script_escapes_are_refused_statically(src):
    assert check_script(src)
    with pytest.raises(ForbiddenExpression):
        execute(src, LEASE)


# Escapes and bombs that only show at run time: they fail fast, with a reason.
RUNTIME_BOMBS = [
    "'a' * 10 ** 9",
    "10 ** 10 ** 10",
    "[1] * 10 ** 9",
    "(1,) * 10 ** 8",
    "2 << 10 ** 9",
    "9 ** 9 ** 9",
    "(10 ** 1000) * (10 ** 1000)",
    "range(10 ** 9)",
    "list(range(10 ** 9))",
    "[i for i in range(10 ** 8)]",
    "[i * j for i in range(10000) for j in range(10000)]",
    "[[1] * 10000 for i in range(10000)]",
    "[str(i) * 5000 for i in range(10000)]",
    "str([[0] * 1000] * 1000)",
    "f'{[[0] * 1000] * 1000}'",
    "sorted([[0] * 1000] * 1000)",
    "len(set([tuple([0] * 1000)] * 5000))",
    "[[0] * 1000] * 1000 == [[0] * 1000] * 1000",
    "'x' * 60000 + 'y' * 60000",
    "'a'.join(['b' * 1000] * 1000)",
    "('a' * 1000).replace('a', 'b' * 1000)",
    "'a,' * 40000 and ('a,' * 40000).split(',')",
    "'%s' % 'x'",
    "f'{1:>999999999}'",
    "f'{1:{\"9\" * 9}}'",
    "f'{\"x\":.999999999}'",
    "int('9' * 5000)",
    "sum([[1], [2]], [])",
    "round(1.5, 10 ** 9)",
    "missing_name",
    "lease_request['nope']",
    "1 / 0",
]


@pytest.mark.parametrize("src", RUNTIME_BOMBS)
def test_bombs_fail_fast_at_run_time(src):
    assert check_expression(src) == [], "this case is meant to pass the static check"
    with pytest.raises(ExpressionFailed) as err:
        evaluate(src, LEASE)
    assert str(err.value)


@pytest.mark.parametrize("src", [
    "while True:\n    pass",
    "x = 0\nwhile x >= 0:\n    x += 1",
    "x = []\nwhile True:\n    x.append(x)",
    "x = [1]\nwhile True:\n    x = x + x",
    "s = 'a'\nwhile True:\n    s += s",
    "d = {}\nfor i in range(10000):\n    d[i] = [i] * 1000",
    "x = [0]\nwhile True:\n    x.extend(x)",
    "n = 2\nwhile True:\n    n = n * n",
    "s = {1}\nwhile True:\n    s = s.union([len(s) + i for i in range(100)])",
])
def test_endless_or_exploding_scripts_are_stopped(src):
    assert check_script(src) == []
    with pytest.raises(ExpressionFailed):
        execute(src, {})


def test_scripts_assign_and_return_the_updated_names():
    script = (
        "free = [ip for ip in pool if ip not in taken]\n"
        "result = {'count': len(free)}\n"
        "result['first'] = free[0] if free else None\n"
        "total = 0\n"
        "for i in range(10):\n"
        "    if i == 3:\n"
        "        continue\n"
        "    if i == 6:\n"
        "        break\n"
        "    total += i\n"
        "else:\n"
        "    total = -1\n"
        "a, b = pool\n"
        "del taken\n"
        "names = sorted(lease_request.keys())\n"
        "pool.append('10.0.0.7')\n"
        "attempts -= 1\n"
    )
    before = {k: (list(v) if isinstance(v, list) else v) for k, v in LEASE.items()}
    out = execute(script, LEASE)
    assert out["free"] == ["10.0.0.6"]
    assert out["result"] == {"count": 1, "first": "10.0.0.6"}
    assert out["total"] == 0 + 1 + 2 + 4 + 5
    assert (out["a"], out["b"]) == ("10.0.0.5", "10.0.0.6")
    assert "taken" not in out
    assert out["names"] == ["client_id", "hostname", "subnet"]
    assert out["pool"] == ["10.0.0.5", "10.0.0.6", "10.0.0.7"]
    assert out["attempts"] == 1
    assert {k: v for k, v in LEASE.items()} == before  # the caller's data is untouched


def test_a_failing_script_changes_nothing():
    data = {"lease": {"ip": "10.0.0.5"}, "log": []}
    with pytest.raises(ExpressionFailed):
        execute("log.append('x')\nlease['ip'] = None\nboom = lease['missing']", data)
    assert data == {"lease": {"ip": "10.0.0.5"}, "log": []}


def test_helpers_can_be_called_and_data_callables_cannot():
    calls = []

    def pick(subnet: str) -> str:
        calls.append(subnet)
        return subnet.replace("0/24", "9")

    names = {**LEASE, "sneaky": print}
    assert evaluate("pick(lease_request['subnet'])", names, helpers={"pick": pick}) == "10.0.0.9"
    assert calls == ["10.0.0.0/24"]
    assert check_expression("pick(1)")  # unknown unless the caller names it
    assert check_expression("pick(1)", {"pick"}) == []
    assert check_expression("sneaky('x')")
    out = execute("f = len\ng = pick\nx = 1", {}, helpers={"pick": pick})
    assert out == {"x": 1}  # functions never leak into task data


def test_objects_of_unknown_types_are_opaque_even_at_run_time():
    class Secret:
        def get(self, key: str) -> str:
            raise AssertionError("sandboxed code must not reach this method")

        def __getitem__(self, key: str) -> str:
            raise AssertionError("nor this one")

    names = {"obj": Secret()}
    for src in ("obj.get('x')", "obj['x']", "len(obj)", "[x for x in obj]"):
        with pytest.raises(ExpressionFailed):
            evaluate(src, names)
    # builtins are opaque values too
    with pytest.raises(ExpressionFailed):
        evaluate("str.join(',', ['a'])", {})


def test_source_that_is_too_large_or_too_deep_is_a_problem_not_a_crash():
    assert check_expression("1 + " * 20000 + "1")
    assert check_expression("-" * 5000 + "1")
    assert check_expression("(" * 300 + "1" + ")" * 300)
    assert check_expression("[" * 60 + "]" * 60)
    assert check_expression("")
    assert check_expression("1 +")
    assert check_script("if True:\n" + "".join(" " * i + "if x:\n" for i in range(1, 80)) + " " * 80
                        + "pass")


def test_limits_are_configurable():
    tight = Limits(max_steps=50)
    with pytest.raises(ExpressionFailed, match="50 steps"):
        evaluate("[i for i in range(100)]", {}, limits=tight)
    assert evaluate("[i for i in range(100)]", {})[-1] == 99
    with pytest.raises(ExpressionFailed):
        evaluate("'a' * 11", {}, limits=Limits(max_string=10))


def test_evaluation_works_in_any_thread():
    results = []

    def work() -> None:
        results.append(evaluate("sum(range(100))", {}))
        try:
            execute("while True:\n    pass", {})
        except SandboxError as err:
            results.append(type(err).__name__)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, results)) == sorted(["4950"] * 4 + ["ExpressionFailed"] * 4)


def test_errors_form_one_family():
    assert issubclass(ForbiddenExpression, SandboxError)
    assert issubclass(ExpressionFailed, SandboxError)


# --- the interpreter agrees with Python on what it allows ---------------------------------

import builtins  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_atoms = st.one_of(
    st.integers(-20, 20).map(str),
    st.sampled_from(["x", "y", "s", "t", "True", "False", "None", "'ab'", "[1, 2]", "(3,)"]),
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(
        ["+", "-", "*", "//", "%", "<", "<=", "==", "!=", ">", "and", "or", "in", "|", "&", "^"]),
        children).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
    power = st.tuples(children, st.integers(0, 4)).map(lambda t: f"({t[0]} ** {t[1]})")
    unary = st.tuples(st.sampled_from(["not ", "-", "~"]), children).map(
        lambda t: f"({t[0]}{t[1]})")
    calls = st.tuples(st.sampled_from(["len", "abs", "str", "bool", "list", "sorted"]),
                      children).map(lambda t: f"{t[0]}({t[1]})")
    pairs = st.tuples(st.sampled_from(["min", "max"]), children, children).map(
        lambda t: f"{t[0]}({t[1]}, {t[2]})")
    ternary = st.tuples(children, children, children).map(
        lambda t: f"({t[0]} if {t[1]} else {t[2]})")
    comp = st.tuples(children, children).map(lambda t: f"[{t[0]} for v in [1, 2] if {t[1]}]")
    return st.one_of(binary, power, unary, calls, pairs, ternary, comp)


EXPRESSIONS = st.recursive(_atoms, _combine, max_leaves=8)
NAMES = {"x": 7, "y": -3, "s": "lease", "t": [1, "a"]}


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # strategy repr size
@settings(max_examples=300, deadline=None)
@given(EXPRESSIONS)
def test_allowed_expressions_evaluate_exactly_like_python(src):
    assert check_expression(src) == []
    try:
        expected = eval(src, {"__builtins__": builtins, **NAMES})  # trusted: generated here
    except Exception:
        with pytest.raises(ExpressionFailed):
            evaluate(src, NAMES)
        return
    try:
        got = evaluate(src, NAMES)
    except ExpressionFailed as err:
        # only the sandbox's own refusals may differ from Python
        assert "%-formatting" in str(err) or "larger than" in str(err), (src, err)
        return
    assert got == expected and type(got) is type(expected), src


def test_a_wall_clock_deadline_backs_up_the_step_budget():
    with pytest.raises(ExpressionFailed, match="longer than"):
        execute("while True:\n    pass", {}, limits=Limits(max_seconds=0.0))
