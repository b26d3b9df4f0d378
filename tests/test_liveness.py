"""Live workers listed from the beat index (recovery/liveness.py): two round trips however many keys
Redis holds, dead members pruned without ever dropping a live one, and the workers of the version
before the index (no member) still found by a SCAN for one release. Real Redis."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis as redis_lib

from cvunet_matting.recovery import liveness
from tests import support

pytestmark = pytest.mark.services


class CountingRedis(redis_lib.Redis):
    """A client that counts its SCAN calls (scan_iter pages through `scan`)."""

    scans = 0

    def scan(self, *args, **kwargs):
        self.scans += 1
        return super().scan(*args, **kwargs)


def counting_client() -> CountingRedis:
    return CountingRedis(connection_pool=support.redis().connection_pool)


def scanned_already(client: redis_lib.Redis) -> liveness.LegacyBeats:
    """A legacy lookup that has just scanned (nothing older found) and will not scan again by itself."""
    legacy = liveness.LegacyBeats(every=3600)
    legacy.names(client)
    return legacy


def older_beat(client: redis_lib.Redis, incarnation: str, held: list[str], ttl: float = 30) -> None:
    """A heartbeat as a worker of the version before the index wrote it: the key alone."""
    payload = {"held": held, "receiving": False, "queues": ["matting"], "at": time.time()}
    client.set(liveness.BEAT + incarnation, json.dumps(payload), px=int(ttl * 1000))


def test_workers_are_listed_from_the_index_without_scanning_the_keyspace(clean_state):
    client = counting_client()
    client.mset({f"cvunet:ends:task-{i}": 1 for i in range(2000)})  # what every image leaves for a week
    legacy = scanned_already(client)
    liveness.beat(client, "gpu0@a/1/x", ["t-1", "t-2"], ttl=30, queues=["matting"])
    liveness.beat(client, "gpu1@b/2/y", [], ttl=30, receiving=True)
    client.scans = 0
    found = liveness.beats(client, legacy)
    assert client.scans == 0
    assert sorted(found) == ["gpu0@a/1/x", "gpu1@b/2/y"]
    assert found["gpu0@a/1/x"]["held"] == ["t-1", "t-2"] and found["gpu1@b/2/y"]["receiving"] is True
    assert client.zscore(liveness.BEATS, "gpu0@a/1/x") == pytest.approx(found["gpu0@a/1/x"]["at"])


def test_an_expired_beat_leaves_the_index_and_a_live_one_never_does(clean_state):
    client = support.redis()
    legacy = scanned_already(client)
    liveness.beat(client, "dead@a/1/x", ["t-1"], ttl=30)
    liveness.beat(client, "alive@b/2/y", ["t-2"], ttl=30)
    client.delete(liveness.BEAT + "dead@a/1/x")  # as its TTL ends it
    assert liveness.live_workers(client) == {"alive@b/2/y": {"t-2"}}
    assert liveness.beats(client, legacy).keys() == {"alive@b/2/y"}
    assert client.zrange(liveness.BEATS, 0, -1) == [b"alive@b/2/y"]  # pruned by the reader
    # A reader that saw a beat expire prunes only if it is still expired: one that beat again stays.
    liveness.beat(client, "back@c/3/z", [], ttl=30)
    assert liveness.prune(client, ["back@c/3/z"]) == 0
    assert client.zscore(liveness.BEATS, "back@c/3/z") is not None
    client.delete(liveness.BEAT + "back@c/3/z")
    assert liveness.prune(client, ["back@c/3/z"]) == 1
    assert client.zscore(liveness.BEATS, "back@c/3/z") is None


def test_a_clean_stop_leaves_neither_beat_nor_member(clean_state):
    client = support.redis()
    liveness.beat(client, "stops@a/1/x", ["t-1"], ttl=30)
    liveness.forget(client, "stops@a/1/x")
    assert client.exists(liveness.BEAT + "stops@a/1/x") == 0
    assert client.zscore(liveness.BEATS, "stops@a/1/x") is None
    assert liveness.beats(client, scanned_already(client)) == {}


def test_an_older_workers_beat_is_found_by_the_scan_and_then_read_by_name(clean_state):
    """During a rolling upgrade: its key alone, no index member. Found by the first look of a process
    and by each rescan (reconcile asks for one before it republishes), read by name in between."""
    client = counting_client()
    liveness.beat(client, "new@a/1/x", ["t-1"], ttl=30)
    older_beat(client, "old@b/2/y", ["t-2"])
    legacy = liveness.LegacyBeats(every=3600)
    found = liveness.beats(client, legacy)  # a process's first look scans
    assert {name: b["held"] for name, b in found.items()} == {"new@a/1/x": ["t-1"], "old@b/2/y": ["t-2"]}
    older_beat(client, "old@b/2/y", ["t-3"])  # its next beat: read by name, no scan
    older_beat(client, "old@c/3/z", ["t-4"])  # started after the scan: seen at the next one
    client.scans = 0
    found = liveness.beats(client, legacy)
    assert client.scans == 0
    assert found.keys() == {"new@a/1/x", "old@b/2/y"} and found["old@b/2/y"]["held"] == ["t-3"]
    assert liveness.beats(client, legacy, rescan=True).keys() == {"new@a/1/x", "old@b/2/y", "old@c/3/z"}
    assert client.scans > 0
    client.delete(liveness.BEAT + "old@b/2/y")
    assert liveness.beats(client, legacy).keys() == {"new@a/1/x", "old@c/3/z"}


def test_the_scan_runs_again_once_its_interval_has_passed(clean_state):
    client = support.redis()
    legacy = liveness.LegacyBeats(every=0.2)
    assert liveness.beats(client, legacy) == {}
    older_beat(client, "old@b/2/y", [])
    time.sleep(0.3)
    assert liveness.beats(client, legacy).keys() == {"old@b/2/y"}


def test_reconcile_republishes_nothing_a_worker_of_the_version_before_holds(clean_state):
    """Its first look reads the index and the older names the process found at its last scan, which
    may be a minute old; before it republishes anything it scans again, and finds the older worker."""
    from cvunet_matting.recovery.requeue import reconcile

    client = support.redis()
    _, rows = support.claimed_chunk(2, published=True)  # then lost by Redis: not queued anywhere
    liveness.LEGACY.names(client, rescan=True)  # the process's scan, just before the older worker came
    stop = threading.Event()

    def beating() -> None:  # beats on, as a live worker does: the second look waits for a new beat
        while not stop.is_set():
            older_beat(client, "old@b/2/y", [str(r["id"]) for r in rows])
            stop.wait(0.2)

    thread = threading.Thread(target=beating, daemon=True)
    thread.start()
    try:
        assert reconcile(settle_s=5, notify=lambda *_: None)["lost"] == []
        assert client.llen("matting") == 0
    finally:
        stop.set()
        thread.join()
    client.delete(liveness.BEAT + "old@b/2/y")  # that worker gone: its images are lost, and republished
    assert sorted(r["id"] for r in reconcile(settle_s=5, notify=lambda *_: None)["lost"]) == sorted(
        r["id"] for r in rows
    )
    assert client.llen("matting") == len(rows)
