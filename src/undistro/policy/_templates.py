"""Sandboxed Jinja2 rendering of ``templates/`` with the node's facts.

Jinja2 costs ~5 MB and ~30 ms to import, so it is imported only when a
policy is compiled (a cached policy never pays it). Undefined variables are
errors, not empty strings: a typo must not ship an empty config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


class TemplateRenderer:
    def __init__(self, templates_dir: str, context: Mapping[str, Any]) -> None:
        self.templates_dir = templates_dir
        self.context = context
        self._env: Any = None

    def render(self, relpath: str, extra: Mapping[str, Any]) -> str:
        import jinja2
        from jinja2.sandbox import SandboxedEnvironment

        if self._env is None:
            self._env = SandboxedEnvironment(
                loader=jinja2.FileSystemLoader(self.templates_dir),
                undefined=jinja2.StrictUndefined,
                autoescape=False,
                keep_trailing_newline=True,
            )
        shown = os.path.join("templates", relpath)
        try:
            template = self._env.get_template(relpath)
            return str(template.render({**self.context, **extra}))
        except jinja2.TemplateNotFound:
            raise ValueError(f"template not found: {shown}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(
                f"{shown}:{exc.lineno}: template syntax error: {exc.message}"
            ) from None
        except jinja2.UndefinedError as exc:
            raise ValueError(f"{shown}: undefined variable: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise ValueError(f"{shown}: template error: {exc}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise ValueError(f"{shown}: template error: {type(exc).__name__}: {exc}") from None
        except RecursionError:
            raise ValueError(f"{shown}: template error: too deeply nested") from None
