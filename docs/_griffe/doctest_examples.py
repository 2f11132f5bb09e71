"""Griffe extension for the API pages: render `Example:` sections as code examples.

Griffe's Google-style parser reads only `Examples:` (plural) as an examples section; a
singular `Example:` becomes an admonition whose `>>>` lines render as plain Markdown text
(and a bracketed doctest output is even taken for a cross-reference). Docstrings in this
package use the singular heading too, so it is renamed before the docstrings are parsed.
"""

import re

import griffe

_SINGULAR_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class DoctestExamples(griffe.Extension):
    """Renames `Example:` section headings to `Examples:` in every docstring."""

    def on_object(self, *, obj, loader, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR_HEADING.sub(r"\1Examples:", obj.docstring.value)
