"""The local AWS emulator: moto's server, with DynamoDB requests and SQS sends served one at a time.

moto handles each request on its own thread and does not lock its tables, so two concurrent
conditional writes can both succeed. Real DynamoDB applies conditions atomically, and wxbridge's
leases and markers rely on that: serialising DynamoDB calls restores it. In the same way two
concurrent sends of one deduplication id to a FIFO queue can both be taken, where SQS keeps one
(the callbacks rely on it): sends are serialised too. Other SQS calls (long polls above all)
stay concurrent.

moto also forgets a FIFO deduplication id once its message is deleted; SQS keeps it for the
whole five minutes ("Amazon SQS continues tracking the deduplication ID even after the message
has been received and deleted", SQS Developer Guide, FIFO key terms), and a WeChat retry that
comes after the dispatcher took the message relies on that: the patch below keeps it.

    python infra/emulator.py HOST PORT
"""

import os
import sys
import threading

from moto.sqs import models as sqs_models
from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def keep_deduplication_ids() -> None:
    """Makes a FIFO queue drop a deduplication id seen in the last five minutes, deleted or not."""
    add_message = sqs_models.Queue.add_message
    window_ms = sqs_models.DEDUPLICATION_TIME_IN_SECONDS * 1000

    def add(queue, message):
        if queue.fifo_queue and message.deduplication_id:
            seen = queue.__dict__.setdefault("_sent_deduplication_ids", {})
            now = message.sent_timestamp
            for key in [k for k, at in seen.items() if now - at >= window_ms]:
                del seen[key]
            scope = message.group_id if getattr(queue, "deduplication_scope", "queue") == "messageGroup" else None
            key = (scope, message.deduplication_id)
            if key in seen:
                return
            seen[key] = now
        add_message(queue, message)

    sqs_models.Queue.add_message = add


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    keep_deduplication_ids()
    moto = DomainDispatcherApplication(create_backend_app)
    dynamodb, sends = threading.Lock(), threading.Lock()

    def app(environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        lock = None
        if target.startswith("DynamoDB_"):
            lock = dynamodb
        elif target in ("AmazonSQS.SendMessage", "AmazonSQS.SendMessageBatch"):
            lock = sends
        if lock is None:
            return moto(environ, start_response)
        with lock:
            # Produce the whole response while holding the lock.
            return list(moto(environ, start_response))

    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
