"""The local AWS emulator: moto's server, with DynamoDB requests served one at a time.

moto handles each request on its own thread and does not lock its tables, so two concurrent
conditional writes can both succeed. Real DynamoDB applies conditions atomically, and wxbridge's
leases and markers rely on that: serialising DynamoDB calls restores it. Other services (SQS
long polls above all) stay concurrent.

    python infra/emulator.py HOST PORT
"""

import os
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    moto = DomainDispatcherApplication(create_backend_app)
    dynamodb = threading.Lock()

    def app(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with dynamodb:
                # Produce the whole response while holding the lock.
                return list(moto(environ, start_response))
        return moto(environ, start_response)

    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
