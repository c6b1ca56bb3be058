"""The delivery stages, one module each, composed by :func:`router.pipeline.chain.chain`."""
