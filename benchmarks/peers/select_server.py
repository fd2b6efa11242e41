"""The classic tutorial select() echo server, as written: select.select, recv(1024), a queue per connection.

Kept deliberately close to the tutorial (lists scanned with `in`, one
queue.Queue per connection, `select` over every socket on each turn), with
two fixes a benchmark needs: partial writes are finished, not dropped, and a
socket that closed while also writable is skipped. `--recv-size 65536` is the
64 KiB-recv variant.
"""

import queue
import select

import _common


def serve(args):
    """Serve with select.select until interrupted."""
    reply = _common.reply_function(args.upper)
    server = _common.listen(args.host, args.port)
    inputs = [server]
    outputs = []
    message_queues = {}
    _common.ready()

    def close(s):
        if s in outputs:
            outputs.remove(s)
        inputs.remove(s)
        s.close()
        del message_queues[s]

    while inputs:
        readable, writable, exceptional = select.select(inputs, outputs, inputs)
        for s in readable:
            if s is server:
                try:
                    connection, client_address = s.accept()
                except BlockingIOError:
                    continue
                connection.setblocking(False)
                _common.nodelay(connection)
                inputs.append(connection)
                message_queues[connection] = queue.Queue()
            else:
                try:
                    data = s.recv(args.recv_size)
                except OSError:  # a reset: the tutorial's server would crash here
                    data = b""
                if data:
                    message_queues[s].put(reply(data))
                    if s not in outputs:
                        outputs.append(s)
                else:
                    close(s)
        for s in writable:
            if s not in message_queues:  # closed above
                continue
            try:
                next_msg = message_queues[s].get_nowait()
            except queue.Empty:
                outputs.remove(s)
            else:
                try:
                    sent = s.send(next_msg)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    close(s)
                    continue
                if sent < len(next_msg):
                    # The tutorial's server dropped the rest; put it back at the head of the queue.
                    message_queues[s].queue.appendleft(next_msg[sent:])
        for s in exceptional:
            if s in message_queues:
                close(s)


if __name__ == "__main__":
    args = _common.parse_args(__doc__.split("\n")[0], lambda p: p.add_argument(
        "--recv-size", type=int, default=1024, help="bytes per recv (the tutorial's: 1024)"))
    _common.run(lambda: serve(args))
