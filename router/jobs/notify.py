"""The built-in ``notify`` job: render the rule's template for each channel and deliver it."""

from __future__ import annotations

import logging

from router.core.errors import TemplateError
from router.core.message import Message, Outcome
from router.jobs.base import Job, JobContext, NoOptions

log = logging.getLogger("router.jobs.notify")


class NotifyJob(Job):
    """Render the rule's template once per channel and deliver to all channels at once.

    Channels are delivered concurrently so a slow one does not hold up the others. A channel
    whose message fails to render does not stop the others either: they are delivered first,
    then the first render error is raised as a :class:`router.core.errors.TemplateError`.
    """

    name = "notify"
    With = NoOptions

    async def handle(self, ctx: JobContext) -> None:
        messages: list[tuple[str, Message]] = []
        render_errors: list[TemplateError] = []
        for channel in ctx.rule.channels:
            try:
                messages.append((channel, ctx.render(channel)))
            except TemplateError as exc:
                render_errors.append(exc)
            except Exception as exc:
                error = TemplateError(
                    f"rendering for channel '{channel}' failed: {type(exc).__name__}: {exc}",
                    template=ctx.rule.template,
                )
                error.__cause__ = exc
                render_errors.append(error)

        results: list[Outcome | BaseException] = []
        if len(messages) == 1:
            # One channel, the common case: awaited directly, without gather's task.
            try:
                results = [await ctx.deliver(*messages[0])]
            except Exception as exc:
                results = [exc]
        elif messages:
            import asyncio  # loaded: handle() runs on its loop (a top-level import costs `router check`)

            # return_exceptions: every delivery runs to its end even when another one raises.
            results = await asyncio.gather(
                *(ctx.deliver(channel, message) for channel, message in messages), return_exceptions=True
            )

        delivery_errors = [r for r in results if isinstance(r, BaseException)]
        for (channel, _message), result in zip(messages, results, strict=True):
            if isinstance(result, Outcome):
                log.debug("rule %r channel %r: %s %s", ctx.rule.name, channel, result.status, result.reason)
        if delivery_errors:
            # A delivery that raised (rather than returning an Outcome) is a failure of the
            # router's own machinery; raise it first so the event is not acknowledged.
            raise delivery_errors[0]
        if render_errors:
            first = render_errors[0]
            for other in render_errors[1:]:
                first.add_note(f"also: {other}")
            raise first
