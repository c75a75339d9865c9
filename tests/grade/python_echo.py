#!/usr/bin/env python3
"""An echo server in Python on selectors (epoll, level-triggered), written
without this project's contract: the proof that the grader grades any
language (grade epoll-lt -- python3 tests/grade/python_echo.py {port})."""
import selectors
import socket
import sys

LIMIT = 4 * 1024 * 1024  # stop reading from a peer while this much waits for it
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE

selector = selectors.DefaultSelector()
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=1024)
listener.setblocking(False)
selector.register(listener, READ)
pending = {}  # client socket -> bytes received, not yet sent back
finished = set()  # clients that sent their end of file


def serve(client, events):
    """One event; False when the connection is done."""
    if events & READ:
        data = client.recv(65536)
        if data:
            pending[client] += data
        else:
            finished.add(client)
    if pending[client]:
        del pending[client][: client.send(pending[client])]
    if client in finished and not pending[client]:
        return False
    wanted = READ if client not in finished and len(pending[client]) < LIMIT else 0
    selector.modify(client, wanted | (WRITE if pending[client] else 0), client)
    return True


while True:
    for key, events in selector.select():
        if key.data is None:
            try:
                client, _ = listener.accept()
            except (BlockingIOError, ConnectionAbortedError):
                continue
            client.setblocking(False)
            pending[client] = bytearray()
            selector.register(client, READ, client)
            continue
        client = key.data
        try:
            alive = serve(client, events)
        except BlockingIOError:
            alive = True
        except OSError:  # reset, broken pipe
            alive = False
        if not alive:
            selector.unregister(client)
            del pending[client]
            finished.discard(client)
            client.close()
