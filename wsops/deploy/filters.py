"""Template filters for deploy templates (built into wsdeploy's template engine).

``shquote``: a value in a shell script is one word, whatever it holds. The
values are validated before rendering, but a script must not depend on that
(a project's own template may use a value the built-in ones do not).
"""

from __future__ import annotations

import shlex

from django import template

register = template.Library()


@register.filter
def shquote(value: object) -> str:
    """``shlex.quote`` for sh: ``/x; id`` becomes ``'/x; id'``."""
    return shlex.quote(str(value))
