"""Replay arguments: offsets, times, filters and rates parse, or fail with one clear line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from octollm.kafka.headers import REPLAY_GENERATION, REPLAY_OF
from octollm.replay.copy import replay_headers
from octollm.replay.ranges import (
    ALL_PARTITIONS,
    PartitionRange,
    RangeArgs,
    ReplayInputError,
    parse_filter,
    parse_offsets,
    parse_rate,
    parse_time,
    to_millis,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", {ALL_PARTITIONS: 42}),
        ("0", {ALL_PARTITIONS: 0}),
        ("0:10", {0: 10}),
        ("0:10, 2:7", {0: 10, 2: 7}),
    ],
)
def test_offsets_parse(text: str, expected: dict[int, int]) -> None:
    assert parse_offsets(text, option="--from-offset") == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected OFFSET"),
        ("abc", "offset 'abc'"),
        ("-5", "offset '-5'"),
        ("0:-1", "offset '-1'"),
        ("x:3", "partition 'x'"),
        ("0:1,0:2", "partition 0 given twice"),
        ("3,0:1", "a bare offset applies to every partition"),
        ("0:1,", "expected OFFSET"),
    ],
)
def test_bad_offsets_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(ReplayInputError, match="--from-offset") as info:
        parse_offsets(text, option="--from-offset")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_times_with_zone_z_or_naive_utc() -> None:
    utc = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert parse_time("2026-11-25T10:00:00Z", option="--from-time") == utc
    assert parse_time("2026-11-25T10:00:00", option="--from-time") == utc
    assert parse_time("2026-11-25T11:00:00+01:00", option="--from-time") == utc
    assert parse_time("2026-11-25 10:00:00.250z", option="--from-time") == utc + timedelta(
        milliseconds=250
    )
    east = parse_time("2026-11-25T12:00:00+02:00", option="--to-time")
    assert east.tzinfo == timezone(timedelta(hours=2)) and east == utc
    assert to_millis(utc + timedelta(milliseconds=1)) == to_millis(utc) + 1


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01T00:00:00Z", "10:00", ""])
def test_bad_times(text: str) -> None:
    with pytest.raises(ReplayInputError, match=r"--from-time: .* is not an ISO-8601 time"):
        parse_time(text, option="--from-time")


def test_filter_matches_every_key_and_either_value_of_a_repeated_key() -> None:
    f = parse_filter("tenant=acme,tenant=globex,status=FAILED")
    assert f.matches({"tenant_id": "acme", "status": "FAILED"})
    assert f.matches({"tenant_id": "globex", "status": "FAILED"})
    assert not f.matches({"tenant_id": "acme", "status": "COMPLETED"})
    assert not f.matches({"tenant_id": "initech", "status": "FAILED"})
    assert not f.matches({"tenant_id": "acme"})  # a record without a status has no status match


def test_filter_reads_a_routed_tasks_nested_task() -> None:
    f = parse_filter("tenant=acme,task=t-1")
    assert f.matches({"task": {"tenant_id": "acme", "task_id": "t-1"}, "route": "priority"})
    assert not f.matches({"task": {"tenant_id": "acme", "task_id": "t-2"}})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("color=red", "unknown key 'color'; known: tenant, status, task"),
        ("tenant", "expected KEY=VALUE"),
        ("tenant=", "expected KEY=VALUE"),
        ("=acme", "expected KEY=VALUE"),
        ("tenant=acme,,status=x", "expected KEY=VALUE"),
    ],
)
def test_bad_filters(text: str, fragment: str) -> None:
    with pytest.raises(ReplayInputError, match="--filter") as info:
        parse_filter(text)
    assert fragment in str(info.value)


def test_rates() -> None:
    assert parse_rate("500/s") == 500
    assert parse_rate("2.5") == 2.5
    for bad in ("0/s", "-3/s", "fast", "inf", "nan", "/s"):
        with pytest.raises(ReplayInputError, match="--rate"):
            parse_rate(bad)


def test_range_args_need_one_start_and_at_most_one_end() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ReplayInputError, match="exactly one of --from-offset and --from-time"):
        RangeArgs().check()
    with pytest.raises(ReplayInputError, match="exactly one of"):
        RangeArgs(from_offset={ALL_PARTITIONS: 0}, from_time=t).check()
    with pytest.raises(ReplayInputError, match="at most one of --to-offset and --to-time"):
        RangeArgs(from_time=t, to_offset={0: 1}, to_time=t).check()
    with pytest.raises(ReplayInputError, match="is before --from-time"):
        RangeArgs(from_time=t, to_time=t - timedelta(seconds=1)).check()
    RangeArgs(from_time=t, to_time=t).check()  # an empty range is allowed
    assert RangeArgs(from_offset={0: 1, 2: 3}).partitions_named == {0, 2}
    assert RangeArgs(from_offset={ALL_PARTITIONS: 3}).partitions_named == set()


def test_range_size_never_negative() -> None:
    assert PartitionRange(0, 5, 9).size == 4
    assert PartitionRange(0, 9, 5).size == 0


def test_replay_headers_keep_others_and_replace_the_marks() -> None:
    origin = [("trace", b"abc"), (REPLAY_OF, b"old/0/1"), (REPLAY_GENERATION, b"4")]
    out = replay_headers(origin, "octo.tasks.v1/2/40")
    assert out == [("trace", b"abc"), (REPLAY_OF, "octo.tasks.v1/2/40"), (REPLAY_GENERATION, "5")]
    assert replay_headers(None, "t/0/0") == [(REPLAY_OF, "t/0/0"), (REPLAY_GENERATION, "1")]
    assert replay_headers([("a", b"1")], "t/0/0")[-1] == (REPLAY_GENERATION, "1")
    assert replay_headers([(REPLAY_GENERATION, b"junk")], "t/0/0") == [
        (REPLAY_OF, "t/0/0"),
        (REPLAY_GENERATION, "1"),  # unparsable = generation 0, as the reflex layer reads it
    ]
