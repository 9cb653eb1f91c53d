"""The Python end-to-end test app: same behaviour as dnngov-test-app, through the dnngov package.
Usage: test_app.py SOCKET WANTED_SUBNET INFERENCES"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "client", "python"))
import dnngov  # noqa: E402


def main():
    socket_path, wanted, inferences = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    lib = [(10, "small", 70.0, 5.0), (11, "medium", 72.0, 5.0), (12, "large", 75.0, 5.0)]
    app = dnngov.Session("python-test-app", lib, deadline_ms=50.0, priority=1,
                         devices=("gpu",), socket_path=socket_path)
    print("registered %d %d" % (app.app_id, app.current_subnet()), flush=True)
    start = time.monotonic()
    while app.current_subnet() != wanted:
        if time.monotonic() - start > 10:
            print("timeout %d" % app.current_subnet(), flush=True)
            sys.exit(1)
        time.sleep(0.001)
    app.ack_subnet(wanted)
    print("switched %d" % wanted, flush=True)
    for _ in range(inferences):
        with app.inference(deadline_ms=50.0):
            time.sleep(0.001)
    print("done %d 0" % inferences, flush=True)
    for _ in sys.stdin:
        pass
    app.close()


if __name__ == "__main__":
    main()
