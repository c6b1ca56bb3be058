"""Local stand-ins for remote services, for tests. Real local services (RabbitMQ, Redis,
PostgreSQL) are used as they are; only providers on the internet are faked.

- :mod:`tests.fakes.http_sink`: ``HttpSink``, an aiohttp server on 127.0.0.1 that records
  every request and answers scripted replies (status, headers, body, or a hang for timeouts);
  ``free_port()`` for a port where nothing listens (connection refused).
- :mod:`tests.fakes.intercept`: reroutes the HTTP requests apprise makes with ``requests``
  (to discord.com, hooks.slack.com, ...) to a local sink; the original host is kept in the
  ``X-Router-Test-Original-Host`` header.
- :mod:`tests.fakes.smtp_sink`: ``SmtpSink``, an aiosmtpd server that records messages and
  can refuse logins or answer scripted SMTP errors.

In-process use::

    async with HttpSink() as sink, intercept.redirect({"discord.com": sink.url}):
        await channel.send(message)          # apprise posts to sink.url instead
        [request] = await sink.wait_for(1)

In a subprocess (``router serve`` in an integration test)::

    env = intercept.subprocess_env({"discord.com": sink.url, "hooks.slack.com": sink.url})
    proc = await asyncio.create_subprocess_exec("router", "serve", ..., env=env)

``subprocess_env`` sets ``ROUTER_TEST_REDIRECT="discord.com=http://127.0.0.1:PORT,..."`` and
puts ``tests/fakes/autoload`` first on ``PYTHONPATH``; its ``sitecustomize.py`` runs at
interpreter start-up and installs the same interception from that variable (and does nothing
when the variable is unset). The router itself has no test hook.
"""
