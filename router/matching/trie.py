"""The wildcard patterns of every rule in one segment trie: a type's candidate rules without looking at the others."""

from __future__ import annotations

from collections.abc import Iterable

from router.core.patterns import pattern_segments, tokens


class _Node:
    """A node of the pattern trie, keyed by tokens (see :func:`tokens`).

    ``star`` and ``dstar`` are keyed by the separator written before the wildcard. A ``**``
    node is reached without consuming anything (none), or by consuming one segment after its
    separator; only then may it consume any further segment itself (``inside``).
    """

    __slots__ = ("children", "dstar", "is_dstar", "star", "terminal")

    def __init__(self, is_dstar: bool = False) -> None:
        self.children: dict[str, _Node] = {}
        self.star: dict[str, _Node] = {}
        self.dstar: dict[str, _Node] = {}
        self.is_dstar = is_dstar
        self.terminal: list[int] = []

    def insert(self, segments: list[str], position: int) -> None:
        node = self
        for segment in segments:
            separator, text = segment[0], segment[1:]
            if text == "**":
                node = node.dstar.setdefault(separator, _Node(is_dstar=True))
            elif text == "*":
                node = node.star.setdefault(separator, _Node())
            else:
                node = node.children.setdefault(segment, _Node())
        node.terminal.append(position)


_State = tuple[_Node, bool]  # a trie node, and whether a '**' node has consumed a segment


def _closure(states: Iterable[_State]) -> list[_State]:
    """``states`` plus every ``**`` node reachable from them without consuming a segment."""
    seen: dict[tuple[int, bool], _State] = {}
    stack = list(states)
    while stack:
        state = stack.pop()
        key = (id(state[0]), state[1])
        if key in seen:
            continue
        seen[key] = state
        stack.extend((dstar, False) for dstar in state[0].dstar.values())
    return list(seen.values())


def _step(states: list[_State], segment: str) -> list[_State]:
    """The states after consuming ``segment`` (a token) from ``states``."""
    separator = segment[0]
    following: list[_State] = []
    for node, inside in states:
        child = node.children.get(segment)
        if child is not None:
            following.append((child, False))
        star = node.star.get(separator)
        if star is not None:
            following.append((star, False))
        dstar = node.dstar.get(separator)
        if dstar is not None:
            following.append((dstar, True))
        if node.is_dstar and inside:
            following.append((node, True))
    return following


class PatternTrie:
    """Wildcard patterns, each with the position of its rule; :meth:`positions` walks an event type once."""

    def __init__(self) -> None:
        self._root = _Node()

    def add(self, pattern: str, position: int) -> None:
        self._root.insert(pattern_segments(pattern), position)

    def positions(self, event_type: str) -> set[int]:
        """The positions of every pattern ``event_type`` matches."""
        states = _closure([(self._root, False)])
        for segment in tokens(event_type):
            states = _closure(_step(states, segment))
            if not states:
                break
        found: set[int] = set()
        for node, _inside in states:
            found.update(node.terminal)
        return found
