"""The delivery pipeline of one configuration, composed from the stages (as Alertmanager's PipelineBuilder).

    Resolve → SkipIfSent → SkipDisabled → DeliveryHooks → Pacing → ChannelConcurrency → Send

Under dry run the terminal stage is :class:`~router.pipeline.dryrun.DryRun` and there is no
``Pacing``: nothing reaches a provider, so no rate-limit slot is taken in a state store that
real routers may share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from router.activity.recorder import NullRecorder
from router.channels.base import Channel
from router.config.models import RetryPolicy
from router.core.delivery import Delivery
from router.pipeline.chain import Next, Stage, chain
from router.pipeline.concurrency import ChannelConcurrency
from router.pipeline.dryrun import DryRun
from router.pipeline.enabled import SkipDisabled
from router.pipeline.hooks import DeliveryHooks
from router.pipeline.idempotency import SkipIfSent
from router.pipeline.pacing import Pacing, pace_of
from router.pipeline.resolve import Resolve
from router.pipeline.send import Send
from router.plugins.manager import Hooks
from router.runtime.runtime import Runtime
from router.state.base import StateStore
from router.support.metrics import Metrics
from router.transports.base import Transport


def build_pipeline(
    runtime: Runtime,
    channels: Mapping[str, Channel],
    *,
    state: StateStore,
    transport: Transport,
    metrics: Metrics,
    hooks: Hooks,
    send_timeout: float,
    dry_run: bool,
    on_dead: Callable[[Delivery, str, str], Awaitable[None]],
    on_fold: Callable[[], None],
    activity: NullRecorder | None = None,
) -> Next:
    """The stages every delivery of ``runtime``'s configuration goes through, composed into one call."""

    def policy_for(rule_name: str) -> RetryPolicy:
        rule = runtime.rule(rule_name)
        return runtime.config.retry_for(rule) if rule else runtime.config.defaults.retry

    limits = {name: config.concurrency for name, config in runtime.loaded.channel_configs.items()}
    stages: list[Stage] = [
        Resolve(
            state=state,
            transport=transport,
            metrics=metrics,
            policy_for=policy_for,
            sent_ttl=runtime.config.state.idempotency_window,
            on_dead=on_dead,
            activity=activity,
        ),
        SkipIfSent(state),
        SkipDisabled(runtime.channel_enabled),
        DeliveryHooks(hooks),
    ]
    if not dry_run:
        # Pacing outside the concurrency bound: inside it, at most `concurrency` sends would ever
        # reserve a slot, the backlog would never look saturated and would queue in memory.
        stages.append(
            Pacing(
                state=state,
                transport=transport,
                metrics=metrics,
                paces={name: pace for name, c in channels.items() if (pace := pace_of(type(c), c.config))},
                sent_ttl=runtime.config.state.idempotency_window,
                on_fold=on_fold,
            )
        )
    # A full channel keeps at most half the handlers waiting; it defers the rest as durable records.
    handlers = runtime.config.broker.prefetch
    stages.append(ChannelConcurrency(limits, transport=transport, metrics=metrics, handlers=handlers))
    terminal: Next = DryRun() if dry_run else Send(channels.__getitem__, metrics, timeout=send_timeout)
    return chain(stages, terminal)
