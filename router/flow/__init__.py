"""Flow control: turn bursts of events into readable notifications without losing any.

Per rule (rules.yaml): ``dedupe`` skips repeats (:mod:`.dedupe`), ``rate_limit`` drops excess
(:mod:`.ratelimit`), ``throttle`` delays excess (:mod:`.throttle`), ``digest`` collects events
into one notification (:mod:`.digest`, flushed by :mod:`.flusher`); :mod:`.control` applies
them in that order before a rule's job runs. Per channel: :mod:`router.pipeline.pacing` keeps
sends under the provider's rate limit and folds deliveries into a summary (:mod:`.fold`) when
the channel is saturated. All of it lives in the state store, so several router processes
sharing one store behave as one router.
"""
