"""One template compiled: its code, and the facts the checks and render plans read from its syntax tree.

:func:`prepare` is what a compile worker (:mod:`.compile_workers`) runs for each file; its result
is what the disk cache (:mod:`.cache`) keeps.
"""

from __future__ import annotations

import marshal
import types
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, nodes


@dataclass(frozen=True, slots=True)
class Facts:
    """What the checks and the render plans need from a template's syntax tree.

    Small and plain, so it is cached beside the compiled code: a template whose source (and
    the router's code) did not change is neither parsed nor compiled again.
    """

    references: tuple[tuple[str, int], ...]  # constant names of extends/include/import, with their line
    extends: tuple[str | None, int] | None  # the first {% extends %}: its constant name (None: computed), line
    blocks: tuple[tuple[str, int], ...]  # every {% block %}, in order, with the line of its tag
    only_blocks: bool  # the top level is only extends, blocks and literal text

    @classmethod
    def of(cls, tree: nodes.Template) -> Facts:
        references: list[tuple[str, int]] = []
        extends: tuple[str | None, int] | None = None
        blocks: list[tuple[str, int]] = []
        # One walk in document order (what find_all yields), by hand: a thousand templates'
        # trees walked once per kind of node by Jinja's generators cost a tenth of a cold load.
        pending: list[nodes.Node] = [tree]
        while pending:
            node = pending.pop()
            kind = type(node)
            if kind is nodes.Block:
                blocks.append((node.name, node.lineno))  # type: ignore[attr-defined]
            elif kind in REFERENCES:
                target = getattr(node, "template", None)
                constant = isinstance(target, nodes.Const) and isinstance(target.value, str)
                if constant:
                    references.append((target.value, node.lineno))  # type: ignore[union-attr]
                if kind is nodes.Extends and extends is None:
                    extends = (target.value if constant else None, node.lineno)  # type: ignore[union-attr]
            children: list[nodes.Node] = []
            for name in node.fields:
                value = getattr(node, name, None)
                if isinstance(value, list):
                    children.extend(item for item in value if isinstance(item, nodes.Node))
                elif isinstance(value, nodes.Node):
                    children.append(value)
            pending.extend(reversed(children))
        return cls(tuple(references), extends, tuple(blocks), only_blocks(tree))

    def dump(self) -> Any:
        return [
            list(map(list, self.references)),
            list(self.extends) if self.extends else None,
            list(map(list, self.blocks)),
            self.only_blocks,
        ]

    @classmethod
    def read(cls, value: Any) -> Facts | None:
        """The facts from :meth:`dump`'s value, or None for anything else (a damaged cache)."""
        try:
            return cls._read(value)
        except (ValueError, TypeError, IndexError):
            return None

    @classmethod
    def _read(cls, value: Any) -> Facts:
        references, extends, blocks, only_blocks = value
        return cls(
            tuple((str(name), int(line)) for name, line in references),
            None if extends is None else (None if extends[0] is None else str(extends[0]), int(extends[1])),
            tuple((str(name), int(line)) for name, line in blocks),
            bool(only_blocks),
        )


REFERENCES = frozenset({nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport})


def only_blocks(tree: nodes.Template) -> bool:
    """Whether a template's top level is only extends, blocks and literal text (nothing to run)."""
    for node in tree.body:
        if isinstance(node, (nodes.Extends, nodes.Block)):
            continue
        if isinstance(node, nodes.Output) and all(isinstance(part, nodes.TemplateData) for part in node.nodes):
            continue
        return False
    return True


def unmarshal(data: bytes) -> types.CodeType | None:
    try:
        code = marshal.loads(data)
    except (ValueError, EOFError, TypeError):
        return None
    return code if isinstance(code, types.CodeType) else None


def prepare(env: Environment, item: tuple[str, str, str | None]) -> tuple[Any, bytes]:
    """Parse and compile one template (perhaps in a worker process): its facts' dump and its code, marshalled.

    Marshalled, the code is a third of the size of the code object, and made into one only when
    the template is loaded: a thousand code objects alive at once would fragment the heap.
    """
    file, source, filename = item
    tree = env.parse(source, file)
    facts = Facts.of(tree)  # before compiling: the limits' transformer rewrites the tree
    return facts.dump(), marshal.dumps(env.compile(tree, file, filename))
