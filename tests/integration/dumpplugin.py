import asyncio, signal, sys, traceback, faulthandler


def pytest_configure(config):
    def dump(signum, frame):
        loop = None
        try:
            for t in asyncio.all_tasks(asyncio.get_event_loop_policy().get_event_loop()):
                print("TASK", t.get_name(), file=sys.stderr)
                t.print_stack(file=sys.stderr, limit=12)
        except Exception as e:
            print("dump failed", e, file=sys.stderr)

    signal.signal(signal.SIGUSR1, dump)
