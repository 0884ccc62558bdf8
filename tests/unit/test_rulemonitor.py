"""The rule monitor (adapters/rulemonitor.py): which lines of `nft monitor` are ruleset changes,
and the process it follows, started and ended by it."""

from __future__ import annotations

import sys
import threading

from v6gen.adapters.rulemonitor import LegacyPoller, RuleMonitor, is_ruleset_change

# Captured from nftables 1.0.6's `nft monitor` (Debian 12) in a fresh network namespace, while
# a table, a chain with a policy, a rule, a dynamic set and one of its elements were added, the
# policy changed and the ruleset flushed.
CAPTURED = """\
add table inet t
# new generation 2 by process 28535 (nft)
add chain inet t c { type filter hook forward priority filter; policy drop; }
# new generation 3 by process 28536 (nft)
add rule inet t c accept
# new generation 4 by process 28537 (nft)
add set inet t s { type ipv6_addr; flags dynamic; }
# new generation 5 by process 28538 (nft)
add element inet t s { 2001:db8::1 }
# new generation 6 by process 28539 (nft)
add chain inet t c { type filter hook forward priority filter; policy accept; }
# new generation 7 by process 28540 (nft)
delete rule inet t c handle 2
delete set inet t s
delete chain inet t c
delete table inet t
# new generation 8 by process 28541 (nft)
"""


def test_changes_of_tables_chains_and_rules_count_sets_and_elements_do_not() -> None:
    changes = [line for line in CAPTURED.splitlines() if is_ruleset_change(line)]
    assert changes == [
        "add table inet t",
        "add chain inet t c { type filter hook forward priority filter; policy drop; }",
        "add rule inet t c accept",
        "add chain inet t c { type filter hook forward priority filter; policy accept; }",
        "delete rule inet t c handle 2",
        "delete chain inet t c",
        "delete table inet t",
    ]


def test_each_change_the_process_prints_calls_changed_and_close_ends_it() -> None:
    seen = threading.Semaphore(0)
    logs: list[str] = []
    script = (
        f"import sys, time\nsys.stdout.write({CAPTURED!r}); sys.stdout.flush()\ntime.sleep(600)\n"
    )
    monitor = RuleMonitor(seen.release, logs.append, argv=[sys.executable, "-c", script])
    assert monitor.start()
    for _ in range(7):
        assert seen.acquire(timeout=60)  # a hang guard, not a speed claim
    monitor.close()
    assert monitor._proc is not None and monitor._proc.returncode is not None
    assert not seen.acquire(timeout=0)
    assert logs == []  # ended by close: nothing to say


def test_a_monitor_that_cannot_run_says_so_once() -> None:
    logs: list[str] = []
    monitor = RuleMonitor(lambda: None, logs.append, argv=["/nonexistent/nft", "monitor"])
    assert not monitor.start()
    monitor.close()
    assert len(logs) == 1
    assert logs[0].startswith("not following firewall changes (`/nonexistent/nft monitor`")
    assert "judged at the next sync" in logs[0]


def test_a_monitor_that_dies_says_why() -> None:
    logs: list[str] = []
    argv = [sys.executable, "-c", "import sys; sys.exit('Operation not permitted')"]
    monitor = RuleMonitor(lambda: None, logs.append, argv=argv)
    assert monitor.start()
    assert monitor._thread is not None
    monitor._thread.join(timeout=60)
    monitor.close()
    assert len(logs) == 1 and logs[0].endswith("exit 1: Operation not permitted"), logs


def test_legacy_poller_reports_a_change_once_and_not_the_first_read() -> None:
    reads = iter(
        [
            "",
            "",
            "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n",
            "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n",
            "",
        ]
    )
    seen: list[str] = []
    poller = LegacyPoller(lambda: seen.append("changed"), lambda: next(reads))
    assert [poller.poll() for _ in range(5)] == [False, False, True, False, True]
    assert seen == ["changed", "changed"]


def test_legacy_poller_stops_when_closed() -> None:
    calls: list[int] = []

    def read() -> str:
        calls.append(1)
        return str(len(calls))  # a new ruleset at every read

    changes: list[int] = []
    poller = LegacyPoller(lambda: changes.append(1), read, interval=0.001)
    poller.start()
    poller.close()
    stopped = len(calls)
    assert stopped >= 1 and len(changes) == stopped - 1
    threading.Event().wait(0.05)
    assert len(calls) == stopped
