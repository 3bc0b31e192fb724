#!/usr/bin/env python3
"""Local AWS for tests and `make dev`: moto's server on a loopback port.

--port 0 picks a free port; the chosen port is printed as the first line, `PORT <n>`, so the
caller never races for it. With --parent-pid the server exits as soon as that process is gone
(the test binary that started it), so no server outlives its tests.
"""
import argparse
import os
import sys
import threading
import time

from moto import backends
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


def fast_dispatch() -> None:
    """moto finds the backend of every request under one global lock, listing its own package
    directory (an isdir per service) and trying every service's URL patterns each time: with a
    few hundred concurrent requests (the soak) they queue on that lock and time out. Both are pure
    functions of the host, so compute each once."""
    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    lookup = DomainDispatcherApplication.get_backend_for_host
    known: dict = {}

    def get_backend_for_host(self, host):
        if host not in known:
            known[host] = lookup(self, host)
        return known[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host


def serialized_sqs() -> None:
    """moto's `Queue.delete_message` rebuilds the queue's message list and assigns it back, with
    no lock: a `SendMessage` appending to the old list in between is lost (the soak lost one
    message in 21,057 with three pollers deleting while ten receivers sent). Real SQS loses
    nothing, so adding and deleting run under one lock."""
    from moto.sqs import models

    lock = threading.RLock()

    def locked(f):
        def call(*args, **kwargs):
            with lock:
                return f(*args, **kwargs)

        return call

    # Not receive_message: a long poll waits inside it for add_message to notify.
    models.Queue.add_message = locked(models.Queue.add_message)
    models.Queue.delete_message = locked(models.Queue.delete_message)


def watch_parent(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        if os.getppid() != pid:
            os._exit(0)
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args()
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        sys.exit("moto_server.py only listens on loopback")
    fast_dispatch()
    serialized_sqs()
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"PORT {server.server_port}", flush=True)
    if args.parent_pid:
        threading.Thread(target=watch_parent, args=(args.parent_pid,), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
