"""Sandboxed, bounded Jinja2 rendering of ``templates/`` with the node's facts.

Jinja2 costs ~5 MB and ~30 ms to import, so it is imported only when a
policy is compiled (a cached policy never pays it). Undefined variables are
errors, not empty strings: a typo must not ship an empty config.

Jinja2's sandbox stops a template from reaching Python's internals, not from
eating the machine: ``{{ 'a' * 10**12 }}`` asks for a terabyte and two nested
``range(100000)`` loops run for hours. A template that does so is refused
with one line naming it and the limit it hit:

- **output**: at most ``MAX_OUTPUT`` characters per template, counted as
  the text is produced; the operations that can build a large value in one
  step (``*``, ``+``, ``%``, ``**``, the padding filters and string methods,
  macro results, ``namespace`` attributes) are checked *before* they
  allocate, so no single step allocates much more than the limit either;
- **time**: at most ``MAX_SECONDS`` of rendering per template. A watchdog
  thread (one per compile, started on the first render) raises into the
  rendering thread when the deadline passes; it interrupts pure-Python loops
  that produce nothing, which no check between chunks could see;
- ``range()`` is Jinja2's sandboxed one: at most 100,000 items.

Templates and what they include are read through :mod:`._read`: regular
files only, inside ``templates/``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from undistro.policy._read import MIB, read_regular

MAX_OUTPUT = 16 * MIB  # characters a template may produce
MAX_SECONDS = 5.0  # rendering time per template
MAX_SOURCE = 4 * MIB  # bytes of one template file
_MAX_POW_BITS = 1 << 16  # {{ 9 ** 10**9 }} would compute for minutes in C

# Filters and str methods whose integer arguments size their result.
_SIZING_FILTERS = frozenset({"center", "indent", "wordwrap", "truncate", "batch", "slice"})
_SIZING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
# Filters and str methods that turn their arguments into one string: a list
# holding one 10 MB string 1,000 times is small, its str() is 10 GB.
_SERIAL_FILTERS = frozenset({"string", "join", "pprint", "tojson", "format", "replace", "sum"})
_SERIAL_METHODS = frozenset({"join", "format", "format_map", "replace"})
# A width in a %-format or a str.format spec: '%99999999d', '{:>99999999}'.
_WIDTHS = re.compile(r"%[-+ #0]*(\d+)|\{[^{}]*:[^{}\d]*(\d+)")


class _Limit(Exception):
    """A template went past a limit; the message says which."""


class _Overrun(BaseException):
    # Raised into the rendering thread by the watchdog. A BaseException, so
    # that no ``except Exception`` inside Jinja2 or a filter swallows it.
    pass


class _Refused(Exception):
    """A template (or one it includes) that may not be read."""

    def __init__(self, template: str, reason: str) -> None:
        self.template, self.reason = template, reason
        super().__init__(f"{template}: {reason}")


class TemplateRenderer:
    def __init__(
        self,
        templates_dir: str,
        context: Mapping[str, Any],
        *,
        max_output: int | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self.templates_dir = templates_dir
        self.context = context
        self.max_output = MAX_OUTPUT if max_output is None else max_output
        self.max_seconds = MAX_SECONDS if max_seconds is None else max_seconds
        self._env: Any = None
        self._watchdog: _Watchdog | None = None

    def render(self, relpath: str, extra: Mapping[str, Any]) -> str:
        import jinja2

        shown = os.path.join("templates", relpath)
        try:
            return self._render(relpath, {**self.context, **extra})
        except _Refused as exc:
            if exc.template == relpath:
                raise ValueError(f"{shown}: {exc.reason}") from None
            raise ValueError(f"{shown}: cannot include {exc.template!r}: {exc.reason}") from None
        except _Limit as exc:
            raise ValueError(f"{shown}: {exc}") from None
        except jinja2.TemplateNotFound as exc:
            missing = os.path.join("templates", exc.name) if exc.name else shown
            if missing == shown:
                raise ValueError(f"template not found: {shown}") from None
            raise ValueError(f"{shown}: included template not found: {missing}") from None
        except jinja2.TemplateSyntaxError as exc:
            where = os.path.join("templates", exc.name) if exc.name else shown
            raise ValueError(
                f"{where}:{exc.lineno}: template syntax error: {exc.message}"
            ) from None
        except jinja2.UndefinedError as exc:
            raise ValueError(f"{shown}: undefined variable: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise ValueError(f"{shown}: template error: {exc}") from None
        except RecursionError:
            raise ValueError(f"{shown}: template error: too deeply nested") from None
        except MemoryError:
            raise ValueError(f"{shown}: template error: out of memory") from None
        except (TypeError, ValueError, ArithmeticError, LookupError, SyntaxError) as exc:
            raise ValueError(f"{shown}: template error: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        """Stop the watchdog thread, if one was started."""
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None

    def _render(self, relpath: str, context: dict[str, Any]) -> str:
        # Compiling is inside the deadline too: 800 kB of '{{ x }}' lines
        # take Jinja2 8 s to parse.
        if self._watchdog is None:
            self._watchdog = _Watchdog()
        chunks: list[str] = []
        size = 0
        with self._watchdog.limit(self.max_seconds, f"rendering took longer than {_secs(self)}"):
            template = self._environment().get_template(relpath)
            for chunk in template.generate(context):
                size += len(chunk)
                if size > self.max_output:
                    raise _Limit(f"output larger than the limit of {_chars(self.max_output)}")
                chunks.append(chunk)
        return "".join(chunks)

    def _environment(self) -> Any:
        if self._env is None:
            self._env = _make_environment(self.templates_dir, self.max_output)
        return self._env


def _make_environment(templates_dir: str, max_output: int) -> Any:
    # Built here, not at import time: jinja2 is imported only on a compile.
    import jinja2
    from jinja2.compiler import CodeGenerator
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Context
    from jinja2.sandbox import SandboxedEnvironment
    from jinja2.utils import Namespace

    def too_big(what: str) -> _Limit:
        return _Limit(f"{what} would be larger than the limit of {_chars(max_output)}")

    def check_size(value: Any, what: str) -> Any:
        if isinstance(value, str | bytes | list | tuple | dict) and len(value) > max_output:
            raise too_big(what)
        return value

    def check_weight(values: Any, what: str) -> Any:
        if _weight(values, max_output) > max_output:
            raise too_big(what)
        return values

    def check_replace(args: tuple[Any, ...], what: str) -> None:
        # 'x' * 10**5 | replace('', 'y' * 10**5) is 10 GB from 200 kB.
        if len(args) >= 3 and all(isinstance(a, str) for a in args[:3]):
            text, old, new = args[:3]
            grown = len(text) + text.count(old) * max(0, len(new) - len(old))
            if grown > max_output:
                raise too_big(what)

    def check_widths(fmt: Any) -> None:
        if isinstance(fmt, str):
            for m in _WIDTHS.finditer(fmt):
                if int(m.group(1) or m.group(2)) > max_output:
                    raise too_big("a format width")

    def check_ints(args: tuple[Any, ...], what: str) -> None:
        for arg in args:
            if isinstance(arg, int) and abs(arg) > max_output:
                raise too_big(what)

    class BoundedNamespace(Namespace):
        # {% set ns.s = ns.s ~ ns.s %} in a loop doubles a string per turn.
        def __setitem__(self, name: str, value: Any) -> None:
            super().__setitem__(name, check_size(value, f"namespace attribute '{name}'"))

    class BoundedCodeGenerator(CodeGenerator):
        def visit_Concat(self, node: Any, frame: Any) -> None:
            # 'a' ~ b calls str() on each part: weigh them first.
            self.write("environment.bounded_concat((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class BoundedEnvironment(SandboxedEnvironment):
        intercepted_binops = frozenset({"*", "+", "%", "**"})
        code_generator_class = BoundedCodeGenerator

        def bounded_concat(self, parts: tuple[Any, ...]) -> str:
            check_weight(parts, "a '~' concatenation")
            return "".join(map(str, parts))

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            problem = _binop_problem(operator, left, right, max_output)
            if problem == "width":
                check_widths(left)
                check_weight(right, "a '%' format")
            elif problem:
                raise _Limit(problem)
            return check_size(super().call_binop(context, operator, left, right), "a result")

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            name = getattr(__obj, "__name__", None) or getattr(__obj, "name", "")  # a macro's
            name = name if isinstance(name, str) else ""
            # str.format reaches here wrapped by the sandbox (__wrapped__).
            bound = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
            if isinstance(bound, str):
                if name in _SIZING_METHODS:
                    check_ints((*args, *kwargs.values()), f"str.{name}()")
                elif name in _SERIAL_METHODS:
                    check_weight((bound, args, kwargs), f"str.{name}()")
                    if name == "replace":
                        check_replace((bound, *args), "str.replace()")
                    else:
                        check_widths(bound)
            elif name == "generate_lorem_ipsum":
                check_ints((*args, *kwargs.values()), "lipsum()")
            result = SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
            return check_size(result, f"the result of {name or 'a call'}()")

    def guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            # Jinja2 passes an environment or a context first to some filters.
            values = [
                a for a in args if not isinstance(a, jinja2.Environment | Context | EvalContext)
            ]
            what = f"the '{name}' filter"
            if name in _SERIAL_FILTERS:
                check_weight((values, kwargs), what)
                if name == "replace":
                    check_replace(tuple(values), what)
            else:
                check_ints((*values[1:], *kwargs.values()), what)
            if name == "format" and values:
                check_widths(values[0])
            return check_size(func(*args, **kwargs), what)

        guarded.__dict__.update(func.__dict__)  # the pass_context mark Jinja2 reads
        return guarded

    class PolicyLoader(jinja2.BaseLoader):
        """Reads only regular files inside ``templates/``: unlike
        FileSystemLoader it never opens a FIFO or a device, and a refused
        name is reported as itself, not as the template that included it."""

        def get_source(self, environment: Any, template: str) -> tuple[str, str, Any]:
            path = _template_path(templates_dir, template)
            return _read_template(path, template), path, lambda: True

    env = BoundedEnvironment(
        loader=PolicyLoader(),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        # Each {{ value }} is str()ed: weigh it first.
        finalize=lambda value: check_weight(value, "an expression's text"),
    )
    env.globals["namespace"] = BoundedNamespace
    guard = _SIZING_FILTERS | _SERIAL_FILTERS
    env.filters = {
        name: guard_filter(name, func) if name in guard else func
        for name, func in env.filters.items()
    }
    return env


def _weight(value: Any, budget: int) -> int:
    """About how many characters ``str(value)`` takes, counting every
    reference (a list of one string 1,000 times weighs 1,000 strings);
    counting stops once past ``budget``, so the cost is at most that."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset | dict):
            total += 2 + len(item)
            if total > budget:
                return total
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)
        else:
            total += 1
        if total > budget:
            return total
    return total


def _binop_problem(operator: str, left: Any, right: Any, max_output: int) -> str | None:
    """Why ``left OPERATOR right`` may not be computed, before it is."""
    limit = f"would be larger than the limit of {_chars(max_output)}"
    sized = (str, bytes, list, tuple)
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            repeated = isinstance(seq, sized) and isinstance(n, int) and n > 0
            if repeated and _weight(seq, max_output // n + 1) * n > max_output:
                return f"{_short(seq)} * {n} {limit}"
    elif operator == "+":
        both = isinstance(left, sized) and isinstance(right, sized)
        if both and _weight((left, right), max_output) > max_output:
            return f"a sum {limit}"
    elif operator == "%":
        return "width"
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        bits = abs(left).bit_length() * right if abs(left) > 1 else 0
        if bits > _MAX_POW_BITS:
            return f"{left} ** {right} is too large a number"
    return None


def _template_path(templates_dir: str, template: str) -> str:
    parts = template.replace("\\", "/").split("/")
    if template.startswith("/") or ".." in parts:
        raise _Refused(template, "must stay inside templates/")
    return os.path.join(templates_dir, *[p for p in parts if p not in ("", ".")])


def _read_template(path: str, template: str) -> str:
    import jinja2

    try:
        data = read_regular(path, MAX_SOURCE)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise jinja2.TemplateNotFound(template) from None
    except ValueError as exc:
        raise _Refused(template, str(exc)) from None
    except OSError as exc:
        raise _Refused(template, f"cannot read: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(template, "not valid UTF-8") from None


class _Watchdog:
    """One thread that interrupts a render which overruns its deadline.

    ``PyThreadState_SetAsyncExc`` makes the rendering thread raise
    :class:`_Overrun` at its next bytecode boundary — the only way to stop
    ``{% for i in x %}{% for j in x %}{% endfor %}{% endfor %}``, which calls
    nothing and outputs nothing while it spins.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._target: tuple[int, float] | None = None  # (thread id, monotonic deadline)
        self._fired = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="template-watchdog", daemon=True)
        self._thread.start()

    def limit(self, seconds: float, message: str) -> _Armed:
        return _Armed(self, seconds, message)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _arm(self, seconds: float) -> None:
        with self._cond:
            self._target = (threading.get_ident(), time.monotonic() + seconds)
            self._fired = False
            self._cond.notify()

    def _disarm(self) -> bool:
        """True if the deadline passed (any pending interruption is cancelled)."""
        with self._cond:
            self._target = None
            if self._fired:
                _raise_in(threading.get_ident(), None)  # cancel it if not yet raised
            return self._fired

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._target is None:
                    self._cond.wait()
                    continue
                tid, when = self._target
                left = when - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._target = None
                self._fired = True
                _raise_in(tid, _Overrun)


class _Armed:
    def __init__(self, dog: _Watchdog, seconds: float, message: str) -> None:
        self.dog, self.seconds, self.message = dog, seconds, message

    def __enter__(self) -> None:
        self.dog._arm(self.seconds)

    def __exit__(self, *exc: object) -> None:
        try:
            fired = self.dog._disarm()
        except _Overrun:  # delivered while disarming
            fired = True
        if fired:
            raise _Limit(self.message) from None


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 20 else text[:17] + "..."


def _chars(n: int) -> str:
    return f"{n // MIB} Mi characters" if n % MIB == 0 else f"{n} characters"


def _secs(r: TemplateRenderer) -> str:
    return f"the limit of {r.max_seconds:g} s"
