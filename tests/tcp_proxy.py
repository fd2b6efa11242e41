"""A TCP forwarder on a thread that can be frozen: a peer that goes silent.

Used to make a broker look dead to one client (heartbeat timeout) without
stopping the broker every other test shares.
"""

import selectors
import socket
import threading


class FreezableProxy:
    """Forward 127.0.0.1:`port` to `target`.

    `freeze()` drops all traffic; `stall()` stops reading what clients
    send (so their kernel buffers, then their transports, fill up) until
    `resume()`.
    """

    def __init__(self, target):
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._stalled = threading.Event()
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def freeze(self):
        """Stop forwarding in both directions (connections stay open)."""
        self._frozen.set()

    def stall(self):
        """Stop reading from clients (traffic to them still flows)."""
        self._stalled.set()

    def resume(self):
        self._stalled.clear()

    def close(self):
        self._stop.set()
        self._thread.join(5)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()
        self._sel.close()

    def _run(self):
        self._listener.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ)
        while not self._stop.is_set():
            # A stalled client socket stays readable: do not spin on it.
            for key, _ in self._sel.select(0.01 if self._stalled.is_set() else 0.05):
                if key.fileobj is self._listener:
                    client, _ = self._listener.accept()
                    upstream = socket.create_connection(self._target)
                    self._sel.register(client, selectors.EVENT_READ, (upstream, True))
                    self._sel.register(upstream, selectors.EVENT_READ, (client, False))
                    continue
                peer, from_client = key.data
                if from_client and self._stalled.is_set():
                    continue
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._sel.unregister(key.fileobj)
                    key.fileobj.close()
                    continue
                if not self._frozen.is_set():
                    peer.sendall(data)
