"""Connection balancing over `serve --workers N`: a worker above its share of keep-alive connections closes one."""

from __future__ import annotations

import os

from defectnas.serving.balance import SLOTS, ConnectionBalancer, create_table


def test_only_a_worker_above_its_share_sheds_and_a_balanced_split_is_left_alone(tmp_path):
    table = create_table(str(tmp_path))
    assert table.stat().st_size == SLOTS * 3 * 8
    a = ConnectionBalancer(table, workers=2, pid=101)
    b = ConnectionBalancer(table, workers=2, pid=102)
    assert a.slot != b.slot
    now = 1000.0
    assert b.should_close(("127.0.0.1", 2000), now) is False
    assert b.should_close(("127.0.0.1", 2001), now) is True  # 2 here, none elsewhere: over ⌈2 / 2⌉
    for worker, port in ((a, 1000), (b, 2001), (a, 1001), (b, 2002), (a, 1002)):  # arriving in turn: they stay where they land
        assert not worker.should_close(("127.0.0.1", port), now)
    assert not a.should_close(("127.0.0.1", 1003), now)  # 4 against 3 is even
    assert a.should_close(("127.0.0.1", 1004), now)  # 5 against 3 is not: over ⌈8 / 2⌉
    assert (a.connections(), b.connections(), a.closed, b.closed) == (4, 3, 1, 1)
    assert a.should_close(("127.0.0.1", 1005), now)  # its reconnect lands on a again: closed again
    assert not b.should_close(("127.0.0.1", 2003), now)  # and then on b: 4 and 4, and nobody sheds any more
    for t in (now + 0.2, now + 0.4):
        assert not any(a.should_close(("127.0.0.1", p), t) for p in range(1000, 1004))
        assert not any(b.should_close(("127.0.0.1", p), t) for p in range(2000, 2004))
    assert (a.connections(), b.connections()) == (4, 4)


def test_connections_fall_out_of_the_window_and_a_silent_worker_counts_as_holding_none(tmp_path):
    table = create_table(str(tmp_path))
    a = ConnectionBalancer(table, workers=2, window_s=1.0, pid=201)
    ConnectionBalancer(table, workers=2, pid=202)  # a worker that has had no request yet
    assert not a.should_close(("h", 1), 10.0)
    assert a.should_close(("h", 2), 10.0)  # 2 connections here, none there: over ⌈2 / 2⌉
    assert not a.should_close(("h", 3), 12.0)  # ("h", 1) was last seen 2 s ago: forgotten
    assert a.connections() == 1
    assert not a.should_close(None)  # no client address (e.g. a test transport): nothing to balance


def test_a_restarted_worker_takes_its_own_slot_or_a_dead_workers(tmp_path):
    table = create_table(str(tmp_path))
    first = ConnectionBalancer(table, workers=2, pid=os.getpid())
    assert ConnectionBalancer(table, workers=2, pid=os.getpid()).slot == first.slot
    taken = [ConnectionBalancer(table, workers=2, pid=10_000_000 + i).slot for i in range(SLOTS - 1)]  # no such processes
    assert first.slot not in taken and len(set(taken)) == SLOTS - 1
    assert ConnectionBalancer(table, workers=2, pid=123).slot in taken  # the table is full: a dead worker's slot is reused


def test_while_another_worker_is_not_up_nobody_sheds(tmp_path):
    """A worker that has not claimed its slot yet (still loading its model) takes no connections,
    so the one that is up keeps them all: closing them would only send every client back to it."""
    table = create_table(str(tmp_path))
    a = ConnectionBalancer(table, workers=2, pid=301)
    assert not any(a.should_close(("h", p), 5.0) for p in range(8))
    assert (a.connections(), a.closed) == (8, 0)
    ConnectionBalancer(table, workers=2, pid=302)  # the second worker is up, with no connection yet
    assert a.shares(5.05) == (2, 8)  # what /healthz reports: workers up, connections of all of them
    assert a.should_close(("h", 8), 5.1)  # 9 here, none there: over ⌈9 / 2⌉
