"""The Jinja environment templates run in: sandboxed, immutable, limited; its loader; filters that name themselves when they fail."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import jinja2.exceptions as jexc
from jinja2 import Environment, FileSystemLoader, Template, Undefined, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from router.templating.limits import LimitTransformer, check_binop, check_brace_format, check_call

METHODS = (types.MethodType, types.BuiltinMethodType)


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox with immutable containers, reading payload keys before dict methods.

    Immutable: a template must not change the event that later rules and channels see.
    Keys first: event payloads often have keys like ``items``, ``values`` or ``count``, and
    ``data.items`` should be that key, not ``dict.items``.
    Limited: calls, loops and the operators that can build huge values check the render's time
    and size budget (:mod:`router.templating.limits`).
    """

    # Intercepting these also stops Jinja from folding `'x' * 10**9` into a constant at compile time.
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not isinstance(value, METHODS):  # every attribute read comes here: the cheap test first
            return None
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = str(value.__self__)  # wrap_str_format only wraps the methods of strings

        def limited(*args: Any, **kwargs: Any) -> str:
            values = [*args, *kwargs.values()]
            if args and isinstance(args[0], Mapping):  # format_map
                values.extend(args[0].values())
            check_brace_format(text, values)
            return wrapped(*args, **kwargs)

        return limited

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        check_call(obj, args, kwargs)
        return super().call(context, obj, *args, **kwargs)

    def _generate(
        self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False
    ) -> str:
        # Compiling only (the trees Templates parses for itself stay as written).
        return super()._generate(LimitTransformer().visit(source), name, filename, defer_init)


class Loader(FileSystemLoader):
    """Loads a template from code compiled ahead (the cache, or workers), or compiles the tree Templates already parsed.

    Jinja's own ``load`` would parse the source a second time; compiling the tree that
    :meth:`router.templating.templates.Templates.compile_all` parsed for its checks makes each file parsed once. The code
    each template ran is kept in ``compiled`` while :meth:`router.templating.templates.Templates.compile_all` runs, to be
    cached.
    """

    def __init__(self, folder: Path, trees: dict[str, nodes.Template]) -> None:
        super().__init__(folder)
        self._trees = trees
        self.precompiled: dict[str, types.CodeType] = {}
        self.compiled: dict[str, types.CodeType] = {}

    def load(self, environment: Environment, name: str, globals: MutableMapping[str, Any] | None = None) -> Template:
        code = self.precompiled.pop(name, None)
        uptodate = None  # only read with auto_reload, which Templates turns off
        if code is None:
            source, filename, uptodate = self.get_source(environment, name)
            # The tree is rewritten in place by the limits' transformer; Templates' own checks
            # read only what it leaves as written (extends, blocks, top-level text).
            tree = self._trees.get(name)
            code = environment.compile(tree if tree is not None else source, name, filename)
        self.compiled[name] = code
        return environment.template_class.from_code(environment, code, globals or {}, uptodate)


class FilterFailed(Exception):
    """A filter raised; carries its name so the message can say which filter and why."""

    def __init__(self, name: str, cause: Exception) -> None:
        super().__init__(name)
        self.name = name
        self.cause = cause


def guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a filter so its failures name it; Jinja's own errors (undefined, sandbox) pass through."""

    @functools.wraps(function)  # also copies jinja_pass_arg, so pass_context filters keep working
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except jexc.TemplateError:
            raise
        except Exception as exc:
            # A filter that chokes on an undefined input: the missing variable is the real cause.
            for argument in (*args, *kwargs.values()):
                if isinstance(argument, Undefined):
                    argument._fail_with_undefined_error()
            raise FilterFailed(name, exc) from exc

    return guarded
