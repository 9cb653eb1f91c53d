"""A dnngov client written from docs/protocol.md alone: plain Python, no client library.

Usage: protocol_client.py SOCKET INFERENCES

It registers, checks the page's header, checks that the errors the document describes
leave the connection open, runs INFERENCES inferences (each a short sleep, the second one
longer than the deadline) on the sub-network the agent asks for before each, and reports
them through the page, replaces its target, and leaves when its stdin closes. One line on
stdout per step:
  registered APP_ID SUBNET / page ok / errors ok / done INFERENCES MISSES LAST_SUBNET /
  target APP_ID / bye
Any surprise ends it with a message on stderr and exit status 1.
"""
import json
import mmap
import os
import socket
import sys
import time

# The page layout (docs/protocol.md, "Shared-memory page").
MAGIC = int.from_bytes(b"DNNGOVSH", "little")
HEADER_MAGIC, HEADER_LAYOUT_VERSION, HEADER_SIZE, HEADER_APP_ID = 0, 8, 12, 16
AGENT_REQUESTED_SUBNET = 72
APP_ACTIVE_SUBNET = 128
APP_HEARTBEAT_NS = 136
APP_INFERENCES_COMPLETED = 144
APP_DEADLINE_MISSES = 152
APP_LAST_LATENCY_NS = 160
APP_INFERENCE_BEGIN_NS = 168
APP_LATENCY_SUM_NS = 176

DEADLINE_MS = 30.0


def fail(why):
    print("protocol_client: " + why, file=sys.stderr, flush=True)
    sys.exit(1)


def say(line):
    print(line, flush=True)


class Page:
    """The shared page. Each field is read and written whole, through a view of its width:
    the document asks for one aligned store per field, which struct.pack_into does not
    promise."""

    def __init__(self, fd):
        self.map = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.u64 = memoryview(self.map).cast("Q")
        self.u32 = memoryview(self.map).cast("I")

    def get64(self, offset):
        return self.u64[offset // 8]

    def set64(self, offset, value):
        self.u64[offset // 8] = value

    def get32(self, offset):
        return self.u32[offset // 4]

    def set32(self, offset, value):
        self.u32[offset // 4] = value


class Connection:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(10)
        self.sock.connect(path)

    def send(self, message):
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        self.sock.send(data)

    def receive(self):
        """The next reply and the descriptor it carries, if any."""
        data, fds, _, _ = socket.recv_fds(self.sock, 70000, 1)
        if not data:
            fail("the agent closed the connection")
        return json.loads(data), (fds[0] if fds else None)

    def exchange(self, message):
        self.send(message)
        return self.receive()

    def expect_error(self, message, code, mentions=""):
        reply, _ = self.exchange(message)
        if reply.get("type") != "error" or reply.get("code") != code:
            fail("expected the error %s for %r, got %r" % (code, message, reply))
        if mentions not in reply.get("message", ""):
            fail("the error %r does not mention %r" % (reply, mentions))


def register_message():
    return {
        "type": "register",
        "protocol_version": 1,
        "app": "python-protocol-client",
        "pid": os.getpid(),
        "devices": ["cpu"],
        "subnets": [
            {"id": 20, "name": "small", "accuracy_pct": 70.0, "latency_ms": 2.0},
            {"id": 21, "name": "large", "accuracy_pct": 75.0, "latency_ms": 4.0},
        ],
        "target": {"deadline_ms": DEADLINE_MS, "period_ms": 100.0,
                   "accuracy_floor_pct": 70.0, "priority": 3},
    }


def main():
    if len(sys.argv) != 3:
        fail("usage: protocol_client.py SOCKET INFERENCES")
    path, inferences = sys.argv[1], int(sys.argv[2])
    connection = Connection(path)

    # An empty packet is refused and the connection stays open.
    connection.expect_error(b"", "malformed", "empty")
    reply, fd = connection.exchange(register_message())
    if reply.get("type") != "accepted" or fd is None:
        fail("registration: %r (descriptor %r)" % (reply, fd))
    app_id = reply["app_id"]
    if app_id == 0 or reply["shm_size"] != 4096 or reply["protocol_version"] != 1:
        fail("accepted: %r" % reply)
    say("registered %d %d" % (app_id, reply["initial_subnet"]))

    page = Page(fd)
    os.close(fd)
    if page.get32(HEADER_LAYOUT_VERSION) != 1:
        fail("layout version %d" % page.get32(HEADER_LAYOUT_VERSION))
    if page.get64(HEADER_MAGIC) != MAGIC:
        fail("magic %#x" % page.get64(HEADER_MAGIC))
    if page.get32(HEADER_SIZE) != 4096 or page.get32(HEADER_APP_ID) != app_id:
        fail("header size %d, app id %d" % (page.get32(HEADER_SIZE), page.get32(HEADER_APP_ID)))
    if page.get32(APP_ACTIVE_SUBNET) != 0xFFFFFFFF:
        fail("active_subnet is %#x before the first acknowledgement" % page.get32(APP_ACTIVE_SUBNET))
    say("page ok")

    # Errors change nothing and leave the connection open.
    connection.expect_error(b"", "malformed", "empty")
    connection.expect_error(b"not json", "malformed")
    connection.expect_error({"type": "set_target", "target": {"deadline_ms": 45.0, "bogus": 1}},
                            "unknown_field", "bogus")
    connection.expect_error({"type": "set_target", "target": {"deadline_ms": 45.0, "priority": 256}},
                            "malformed", "target.priority")
    connection.expect_error({"type": "set_target", "target": {"deadline_ms": 0.01}},
                            "invalid_deadline")
    connection.expect_error(register_message(), "already_registered")
    say("errors ok")

    subnet = None
    misses = 0
    for i in range(inferences):
        # Before each inference: the sub-network the agent asks for, switched to and
        # acknowledged when it changes.
        requested = page.get32(AGENT_REQUESTED_SUBNET)
        if requested not in (20, 21):
            fail("the agent asks for sub-network %d" % requested)
        if requested != subnet:
            subnet = requested
            page.set32(APP_ACTIVE_SUBNET, subnet)
        start = time.monotonic_ns()
        page.set64(APP_INFERENCE_BEGIN_NS, start)
        time.sleep(0.040 if i == 1 else 0.002)
        now = time.monotonic_ns()
        latency = now - start
        page.set64(APP_LAST_LATENCY_NS, latency)
        page.set64(APP_LATENCY_SUM_NS, page.get64(APP_LATENCY_SUM_NS) + latency)
        if latency > DEADLINE_MS * 1e6:
            misses += 1
            page.set64(APP_DEADLINE_MISSES, page.get64(APP_DEADLINE_MISSES) + 1)
        page.set64(APP_INFERENCE_BEGIN_NS, 0)
        page.set64(APP_HEARTBEAT_NS, now)
        page.set64(APP_INFERENCES_COMPLETED, page.get64(APP_INFERENCES_COMPLETED) + 1)
    say("done %d %d %d" % (page.get64(APP_INFERENCES_COMPLETED), misses, subnet))

    # The new target replaces the old one: period, floor and priority go back to their
    # defaults.
    reply, _ = connection.exchange({"type": "set_target", "target": {"deadline_ms": 45.0}})
    if reply != {"type": "target_updated", "app_id": app_id}:
        fail("set_target: %r" % reply)
    say("target %d" % app_id)

    for _ in sys.stdin:
        pass
    connection.sock.close()
    say("bye")


if __name__ == "__main__":
    main()
