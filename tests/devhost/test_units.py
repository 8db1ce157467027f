"""Pure parts of the devhost: NCRONTAB, settings, host.json, route templates, message encoding, keys."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from devstack.devhost.config import (
    HostConfig,
    SettingNotFound,
    load_local_settings,
    parse_timespan,
    resolve_setting_refs,
)
from devstack.devhost.http import Keys
from devstack.devhost.ncrontab import CronSchedule, IntervalSchedule, InvalidSchedule, parse_schedule
from devstack.devhost.queues import decode_message, encode_message, message_bodies
from devstack.devhost.routing import InvalidRoute, RouteTemplate

UTC = dt.UTC


def occurrences(expression: str, start: dt.datetime, count: int) -> list[dt.datetime]:
    schedule = parse_schedule(expression)
    found = []
    moment = start
    for _ in range(count):
        moment = schedule.next_after(moment)
        found.append(moment)
    return found


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# ----------------------------------------------------------------- NCRONTAB
def test_every_fifteen_minutes_on_the_minute() -> None:
    assert occurrences("0 */15 * * * *", at("2026-01-01T00:07:03"), 3) == [
        at("2026-01-01T00:15:00"), at("2026-01-01T00:30:00"), at("2026-01-01T00:45:00")]


def test_next_occurrence_is_strictly_after_the_given_time() -> None:
    assert occurrences("0 0 * * * *", at("2026-01-01T05:00:00"), 1) == [at("2026-01-01T06:00:00")]


def test_seconds_field_with_list_and_step() -> None:
    assert occurrences("5,10-12 * * * * *", at("2026-01-01T00:00:00"), 5) == [
        at("2026-01-01T00:00:05"), at("2026-01-01T00:00:10"), at("2026-01-01T00:00:11"),
        at("2026-01-01T00:00:12"), at("2026-01-01T00:01:05")]
    assert occurrences("10/20 * * * * *", at("2026-01-01T00:00:00"), 3) == [
        at("2026-01-01T00:00:10"), at("2026-01-01T00:00:30"), at("2026-01-01T00:00:50")]


def test_weekdays_by_name_skip_the_weekend() -> None:
    # 2026-11-20 is a Friday.
    runs = occurrences("0 30 9 * * MON-FRI", at("2026-11-20T10:00:00"), 3)

    assert runs == [at("2026-11-23T09:30:00"), at("2026-11-24T09:30:00"), at("2026-11-25T09:30:00")]


def test_sunday_is_both_zero_and_seven() -> None:
    assert occurrences("0 0 12 * * 0", at("2026-11-20T00:00:00"), 1) == [at("2026-11-22T12:00:00")]
    assert occurrences("0 0 12 * * 7", at("2026-11-20T00:00:00"), 1) == [at("2026-11-22T12:00:00")]


def test_day_of_month_and_day_of_week_must_both_match() -> None:
    # The 13th that is a Friday: in 2026 that is February, March and November.
    assert occurrences("0 0 0 13 * FRI", at("2026-01-01T00:00:00"), 3) == [
        at("2026-02-13T00:00:00"), at("2026-03-13T00:00:00"), at("2026-11-13T00:00:00")]


def test_month_names_and_leap_days() -> None:
    assert occurrences("0 0 6 1 jan,JUL *", at("2026-02-01T00:00:00"), 2) == [
        at("2026-07-01T06:00:00"), at("2027-01-01T06:00:00")]
    assert occurrences("0 0 0 29 2 *", at("2026-01-01T00:00:00"), 1) == [at("2028-02-29T00:00:00")]


def test_five_fields_are_minutes_at_second_zero() -> None:
    assert occurrences("*/30 * * * *", at("2026-01-01T00:00:00"), 2) == [
        at("2026-01-01T00:30:00"), at("2026-01-01T01:00:00")]


def test_a_timespan_is_an_interval() -> None:
    schedule = parse_schedule("00:05:00")

    assert isinstance(schedule, IntervalSchedule)
    assert schedule.next_after(at("2026-01-01T00:00:00")) == at("2026-01-01T00:05:00")


@pytest.mark.parametrize("expression", [
    "* * * *", "60 * * * * *", "* * 24 * * *", "*/0 * * * * *", "5-1 * * * * *", "x * * * * *",
    "0 0 0 31 2 *", ",1 * * * * *",
])
def test_invalid_schedules_are_refused(expression: str) -> None:
    with pytest.raises(InvalidSchedule):
        parse_schedule(expression).next_after(at("2026-01-01T00:00:00"))


def test_a_parsed_schedule_exposes_its_fields() -> None:
    schedule = CronSchedule.parse("0 */15 8-9 * * *")

    assert schedule.minutes == frozenset({0, 15, 30, 45})
    assert schedule.hours == frozenset({8, 9})


# ----------------------------------------------------------------- settings and host.json
def test_setting_references_resolve_from_the_environment() -> None:
    env = {"RENEWAL_SCHEDULE": "0 */15 * * * *", "PREFIX": "mail"}

    assert resolve_setting_refs("%RENEWAL_SCHEDULE%", env) == "0 */15 * * * *"
    assert resolve_setting_refs("%PREFIX%-notifications", env) == "mail-notifications"
    assert resolve_setting_refs("plain-name", env) == "plain-name"


def test_a_missing_setting_is_named_in_the_error() -> None:
    with pytest.raises(SettingNotFound, match="RENEWAL_SCHEDULE"):
        resolve_setting_refs("%RENEWAL_SCHEDULE%", {})


def test_local_settings_fill_in_without_overriding_the_environment(tmp_path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"A": "from-file", "B": "from-file"}}))
    env = {"A": "from-env"}

    applied = load_local_settings(path, env)

    assert env == {"A": "from-env", "B": "from-file"}
    assert applied == ["B"]
    assert load_local_settings(tmp_path / "missing.json", env) == []


def test_timespans() -> None:
    assert parse_timespan("00:00:00.100") == pytest.approx(0.1)
    assert parse_timespan("00:05:00") == 300
    assert parse_timespan("1.02:00:00") == 93600
    with pytest.raises(ValueError):
        parse_timespan("five minutes")


def test_host_json_queue_options_and_defaults() -> None:
    config = HostConfig.from_dict({
        "functionTimeout": "00:10:00",
        "extensions": {"http": {"routePrefix": ""}, "queues": {
            "maxPollingInterval": "00:00:02", "visibilityTimeout": "00:00:05", "batchSize": 64,
            "maxDequeueCount": 3, "messageEncoding": "none"}},
    })

    assert config.route_prefix == ""
    assert config.function_timeout == 600
    assert config.queues.max_polling_interval == 2
    assert config.queues.visibility_timeout == 5
    assert config.queues.batch_size == 32  # the host's maximum
    assert config.queues.new_batch_threshold == 16
    assert config.queues.max_dequeue_count == 3
    assert config.queues.base64 is False
    defaults = HostConfig.from_dict({})
    assert (defaults.route_prefix, defaults.queues.max_dequeue_count, defaults.queues.base64) == ("api", 5, True)


# ----------------------------------------------------------------- routes
def test_route_parameters_with_constraints_and_optional_parts() -> None:
    route = RouteTemplate.parse("accounts/{id:guid}/mail/{folder?}")
    guid = "0f8fad5b-d9cb-469f-a165-70867728950e"

    assert route.match(f"/accounts/{guid}/mail") == {"id": guid}
    assert route.match(f"/Accounts/{guid}/MAIL/inbox") == {"id": guid, "folder": "inbox"}
    assert route.match("/accounts/not-a-guid/mail") is None


def test_route_defaults_ranges_and_regex() -> None:
    assert RouteTemplate.parse("page/{n:int=1}").match("/page") == {"n": "1"}
    assert RouteTemplate.parse("page/{n:int:range(1,9)}").match("/page/10") is None
    assert RouteTemplate.parse("tag/{t:regex(^[a-z]+$)}").match("/tag/abc") == {"t": "abc"}
    assert RouteTemplate.parse("tag/{t:regex(^[a-z]+$)}").match("/tag/ab9") is None
    assert RouteTemplate.parse("tag/{t:minlength(3)}").match("/tag/ab") is None


def test_catch_all_and_url_decoding() -> None:
    route = RouteTemplate.parse("files/{*path}")

    assert route.match("/files/a/b%20c") == {"path": "a/b c"}
    assert route.match("/files") == {}


def test_literal_segments_are_more_specific_than_parameters() -> None:
    literal, parameter = RouteTemplate.parse("items/latest"), RouteTemplate.parse("items/{id}")

    assert literal.specificity < parameter.specificity


@pytest.mark.parametrize("template", ["a/{*rest}/b", "a/{id:nonsense}", "a//b", "{x}/{X}"])
def test_invalid_routes_are_refused(template: str) -> None:
    with pytest.raises(InvalidRoute):
        RouteTemplate.parse(template)


# ----------------------------------------------------------------- messages and keys
def test_messages_are_base64_on_the_wire_and_read_leniently() -> None:
    assert encode_message("héllo") == "aMOpbGxv"
    assert decode_message("aMOpbGxv") == "héllo".encode()
    assert decode_message("not base64!") == b"not base64!"
    assert encode_message("raw", base64_encoding=False) == "raw"
    assert decode_message("aGk=", base64_encoding=False) == b"aGk="


def test_output_values_become_messages() -> None:
    assert message_bodies("a") == ["a"]
    assert message_bodies(b"b") == [b"b"]
    assert message_bodies(["a", "b"]) == ["a", "b"]
    assert message_bodies(None) == []
    with pytest.raises(TypeError):
        message_bodies({"a": 1})


def test_keys_per_auth_level() -> None:
    keys = Keys("function-key", "master-key")

    assert keys.allows("anonymous", None)
    assert not keys.allows("function", None)
    assert keys.allows("function", "function-key") and keys.allows("function", "master-key")
    assert not keys.allows("function", "function-keyX")
    assert keys.allows("admin", "master-key") and not keys.allows("admin", "function-key")


# ----------------------------------------------------------------- timers
def test_a_run_that_starts_late_is_past_due_and_an_on_time_one_is_not() -> None:
    import threading

    from devstack.devhost.timers import TimerRunner

    start = at("2026-01-01T00:00:00")
    calls: list[dt.datetime] = []

    def clock() -> dt.datetime:
        # The first reading schedules the run; every later one is 5 s past it (a sleeping laptop).
        calls.append(start)
        return start if len(calls) == 1 else start + dt.timedelta(seconds=6)

    fired = []
    stop = threading.Event()

    def fire(request: object) -> None:
        fired.append(request)
        stop.set()

    runner = TimerRunner("late", parse_schedule("* * * * * *"), False, fire, stop, clock)
    runner.start()
    runner.join(5)
    runner.run_now()

    assert [request.past_due for request in fired] == [True, False]  # type: ignore[attr-defined]
