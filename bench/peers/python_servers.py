#!/usr/bin/env python3
"""Python socketserver peers for bench/run.

    python3 bench/peers/python_servers.py {threading|forking|sync} {echo|upper|udp} PORT

- echo:  a StreamRequestHandler that reads whatever arrives from rfile and writes it back to
         wfile until EOF.
- upper: the documentation's MyTCPHandler (StreamRequestHandler flavour): read one line,
         reply with it stripped and upper-cased, close.
- udp:   a datagram echo (each datagram sent back to its sender).

The server classes are ThreadingTCPServer / ForkingTCPServer / TCPServer (and the UDP
equivalents), with Python's defaults kept on purpose (request_queue_size = 5,
ForkingMixIn.max_children = 40, Nagle left on, ...): comparing against those defaults is the
point. Only allow_reuse_address is set. Binds 127.0.0.1 and prints
`listening on tcp://127.0.0.1:PORT` (the real port when PORT is 0) on stdout, flushed.
"""

import socketserver
import sys


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            # read1: return what is available (up to 64 KiB) instead of waiting for 64 KiB.
            data = self.rfile.read1(65536)
            if not data:
                return
            self.wfile.write(data)


class UpperHandler(socketserver.StreamRequestHandler):
    # The documentation's MyTCPHandler, StreamRequestHandler version.
    def handle(self):
        self.data = self.rfile.readline(65536).strip()
        self.wfile.write(self.data.upper())


class UdpEchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data, self.client_address)


TCP = {
    "threading": socketserver.ThreadingTCPServer,
    "forking": socketserver.ForkingTCPServer,
    "sync": socketserver.TCPServer,
}
UDP = {
    "threading": socketserver.ThreadingUDPServer,
    "forking": socketserver.ForkingUDPServer,
    "sync": socketserver.UDPServer,
}


def main(argv):
    if len(argv) != 4 or argv[1] not in TCP or argv[2] not in ("echo", "upper", "udp"):
        sys.stderr.write(__doc__)
        return 2
    mode, kind, port = argv[1], argv[2], int(argv[3])
    if kind == "udp":
        base, handler, scheme = UDP[mode], UdpEchoHandler, "udp"
    else:
        base, handler, scheme = TCP[mode], {"echo": EchoHandler, "upper": UpperHandler}[kind], "tcp"

    class Server(base):
        allow_reuse_address = True

    with Server(("127.0.0.1", port), handler) as server:
        host, real_port = server.server_address[:2]
        print(f"listening on {scheme}://{host}:{real_port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
