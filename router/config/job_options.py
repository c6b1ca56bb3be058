"""What configuration reads from a job's ``with:`` model: the fields that name channels.

A job plugin marks such a field with :class:`ChannelRef` (exported from ``router``)::

    class EscalateOptions(BaseModel):
        primary: Annotated[str, ChannelRef]
        fallbacks: Annotated[list[str], ChannelRef] = []

``router check`` then reports a name that is not a configured channel like an unknown
channel in a rule's ``channels:`` (with did-you-mean), and ``router render --rule`` renders a
job rule for the channels its options name. Only top-level fields of the model are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel


class ChannelRef:
    """Marks a field of a job's ``with:`` model as a channel name or a list of channel names.

    Write it as ``Annotated[str, ChannelRef]`` or ``Annotated[list[str], ChannelRef]``; the
    class or an instance (``ChannelRef()``) both work.
    """


def _is_marker(item: Any) -> bool:
    return item is ChannelRef or isinstance(item, ChannelRef)


def channel_ref_fields(model: type[BaseModel]) -> list[str]:
    """The names of ``model``'s fields marked with :class:`ChannelRef`, in declaration order."""
    return [name for name, info in model.model_fields.items() if any(_is_marker(m) for m in info.metadata)]


def channel_refs(options: BaseModel) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Each channel name ``options`` holds in a marked field, with its key path under ``with:``.

    A string field yields ``((field,), name)``; a list, tuple or set ``((field, i), name)``;
    ``None`` and non-string items yield nothing (the model validates types).
    """
    for name in channel_ref_fields(type(options)):
        value = getattr(options, name, None)
        if isinstance(value, str):
            yield (name,), value
        elif isinstance(value, list | tuple | set | frozenset):
            for position, item in enumerate(value):
                if isinstance(item, str):
                    yield (name, position), item
