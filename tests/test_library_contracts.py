"""Contracts with other libraries' internals: each fails loudly if an upgrade changes what we rely on.

The router touches four libraries below their documented API, each from one adapter module:

- aio-pika (router/transports/amqp/consumer.py ``DeliveryQueue``): consumers are recorded in
  ``RobustQueue._consumers`` the way ``RobustQueue.consume`` records them, so that
  ``RobustQueue.restore`` re-consumes them after a reconnect;
- aiormq (router/transports/amqp/batch.py ``send_batch``): a batch of publishes gets its
  delivery tags and confirm futures under the channel lock, the way ``Channel.basic_publish``
  does, and aiormq settles those futures (ack, nack, channel closed);
- requests (router/channels/apprise/capture.py): ``HTTPAdapter.send`` is wrapped to see each
  response apprise's plugins receive;
- smtplib (same module): ``SMTP``'s network methods are wrapped to see SMTP failures.

The version bounds in pyproject.toml keep an untested major release out; these tests say what
to check when raising them.
"""

from __future__ import annotations

import inspect
import smtplib
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import requests
from aio_pika.robust_queue import RobustQueue

from router.channels.apprise.capture import HttpExchange, capture, classify_capture
from router.transports.amqp.consumer import DeliveryQueue

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --- aiormq --------------------------------------------------------------------------------


def test_basic_publish_keeps_the_confirm_bookkeeping_send_batch_repeats() -> None:
    from aiormq.abc import ChannelFrame
    from aiormq.channel import Channel

    publish = inspect.getsource(Channel.basic_publish)
    for step in (
        "async with self.lock:",  # tags are given and frames queued under the channel lock
        "self.delivery_tag += 1",
        "confirmation = self.create_future()",  # rejected by aiormq when the channel closes
        "self.confirmations[delivery_tag] = confirmation",
        "await self.write_queue.put(",
        "ChannelFrame.marshall(",
    ):
        assert step in publish, step
    assert {"channel_number", "frames", "drain_future"} <= set(inspect.signature(ChannelFrame.marshall).parameters)
    confirm = inspect.getsource(Channel._confirm_delivery)
    assert "self.confirmations.pop(delivery_tag)" in confirm and "DeliveryError(" in confirm  # a nack
    assert "max_content_size" in inspect.getsource(Channel.__init__)


# --- aio-pika ------------------------------------------------------------------------------


def test_robust_queue_restores_consumers_from_the_record_delivery_queue_writes() -> None:
    # restore() re-consumes each recorded consumer with consume(consumer_tag=tag, **record):
    # DeliveryQueue.consume must accept exactly those keyword arguments.
    source = inspect.getsource(RobustQueue.restore)
    assert "self._consumers.items()" in source
    assert "self.consume(consumer_tag=consumer_tag, **kwargs)" in source
    assert "_consumers" in RobustQueue.__slots__
    accepted = set(inspect.signature(DeliveryQueue.consume).parameters)
    assert {"callback", "no_ack", "exclusive", "arguments", "consumer_tag", "timeout", "robust"} <= accepted


@pytest.mark.integration
async def test_robust_queue_records_consumers_with_the_keys_delivery_queue_writes(rabbitmq_url: str) -> None:
    import aio_pika

    connection = await aio_pika.connect_robust(rabbitmq_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"contract-{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True)
        assert isinstance(queue, RobustQueue)

        async def ignore(_: Any) -> None:
            return None

        tag = await queue.consume(ignore, robust=True)
        recorded = queue._consumers[tag]
        # DeliveryQueue.consume writes these four keys; restore() passes them back to consume().
        assert set(recorded) == {"callback", "no_ack", "exclusive", "arguments"}
        await queue.cancel(tag)
        assert tag not in queue._consumers
    finally:
        await connection.close()


# --- requests ------------------------------------------------------------------------------


class _Status(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/limited":
            body = b'{"retry_after": 2.5}'
            self.send_response(429)
            self.send_header("content-type", "application/json")
        else:
            body = b"ok"
            self.send_response(204 if self.path == "/ok" else 503)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        return None


@pytest.fixture
def http_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_wrapped_http_adapter_records_each_response_of_a_requests_call(http_server: str) -> None:
    with capture() as recorded:
        assert requests.post(f"{http_server}/ok", data=b"{}", timeout=5).status_code == 204
        assert requests.post(f"{http_server}/limited", data=b"{}", timeout=5).status_code == 429
    assert [e.status for e in recorded.events if isinstance(e, HttpExchange)] == [204, 429]
    outcome = classify_capture(False, recorded)
    assert outcome.status == "retry"
    assert outcome.retry_after == 2.5  # read from the 429's JSON body, as Discord sends it


def test_requests_outside_a_capture_are_untouched(http_server: str) -> None:
    with capture():
        pass  # installs the wrapper
    response = requests.post(f"{http_server}/fail", data=b"{}", timeout=5)
    assert response.status_code == 503
    assert response.text == "ok"


# --- smtplib -------------------------------------------------------------------------------


def test_the_wrapped_smtp_methods_exist_and_are_wrapped_once() -> None:
    with capture():
        pass
    for name in ("__init__", "connect", "starttls", "login", "sendmail"):
        method = getattr(smtplib.SMTP, name)
        assert getattr(method, "_router_capture", False), name
        assert not getattr(method.__wrapped__, "_router_capture", False), f"{name} wrapped twice"


def test_an_smtp_connection_failure_is_recorded_and_retryable() -> None:
    with capture() as recorded, pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", 1, timeout=2)  # nothing listens on port 1
    assert recorded.events and isinstance(recorded.events[-1], OSError)
    assert classify_capture(False, recorded).status == "retry"
