"""A stop a signal handler sets: waits end at once, and the handler never blocks."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from cw.host.stopflag import StopFlag


def test_a_wait_ends_when_another_thread_sets_it() -> None:
    flag = StopFlag()
    try:
        assert flag.wait(0.01) is False
        threading.Timer(0.1, flag.set).start()
        started = time.monotonic()
        assert flag.wait(30) is True
        assert time.monotonic() - started < 20, "woken by the set, not by the timeout"
        assert flag.is_set() and flag.wait(30), "set stays set"
    finally:
        flag.close()


#: Signals as fast as they come while the main thread waits again and again on what their
#: handler sets: with a threading.Event in place of the flag this hangs or crashes in seconds.
PELTED = """
import os, signal, sys, threading, time
from cw.host.stopflag import StopFlag
flag = StopFlag()
signal.signal(signal.SIGUSR1, lambda _signum, _frame: flag.set())
done = False
def pelt():
    while not done:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.00005)
threading.Thread(target=pelt, daemon=True).start()
end = time.monotonic() + 2
while time.monotonic() < end:
    flag.wait(0.0001)
done = True
print("waited")
"""


def test_a_signal_handler_sets_it_while_the_main_thread_waits_on_it() -> None:
    ran = subprocess.run([sys.executable, "-c", PELTED], capture_output=True, text=True, timeout=60)
    assert (ran.returncode, ran.stdout) == (0, "waited\n"), ran.stderr[-2000:]
