"""A small function app that exercises every binding the devhost provides.

It records what its functions saw in ``RECORD`` so tests can observe effects of queue and
timer triggers, which have no response to look at.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


class Record:
    """What the functions saw, by function name; waitable from tests."""

    def __init__(self) -> None:
        self._seen: dict[str, list[Any]] = {}
        self._changed = threading.Condition()

    def add(self, function: str, value: Any) -> None:
        with self._changed:
            self._seen.setdefault(function, []).append(value)
            self._changed.notify_all()

    def seen(self, function: str) -> list[Any]:
        with self._changed:
            return list(self._seen.get(function, []))

    def wait_for(self, function: str, predicate: Callable[[list[Any]], bool], timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self._seen.get(function, [])):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{function}: {self._seen.get(function)!r}")
                self._changed.wait(remaining)
            return list(self._seen[function])


RECORD = Record()


@app.route(route="items/{id:int}/{name?}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def show_item(req: func.HttpRequest) -> func.HttpResponse:
    body = {
        "id": req.route_params.get("id"),
        "name": req.route_params.get("name"),
        "method": req.method,
        "q": req.params.get("q"),
        "body": req.get_body().decode("utf-8"),
        "header": req.headers.get("x-sample"),
        "url": req.url,
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json", headers={"X-Item": "yes"})


@app.route(route="items/latest", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def latest_item(req: func.HttpRequest) -> str:
    return "latest"


@app.route(route="files/{*path}", auth_level=func.AuthLevel.ANONYMOUS)
def show_file(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.route_params.get("path", ""), status_code=200)


@app.route(route="secret", methods=["GET"])
def secret(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("secret ok")


@app.route(route="maintenance", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def maintenance(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(status_code=204)


@app.route(route="async-echo/{word}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def async_echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.route_params["word"], status_code=201, mimetype="text/html", charset="latin-1")


@app.route(route="explode", auth_level=func.AuthLevel.ANONYMOUS)
def explode(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("internal detail that must not reach the caller")


@app.route(route="enqueue", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="work", queue_name="%SAMPLE_WORK_QUEUE%", connection="SampleStorage")
@app.queue_output(arg_name="outbox", queue_name="sample-outbox", connection="SampleStorage")
def enqueue(req: func.HttpRequest, work: func.Out[Any], outbox: func.Out[str]) -> func.HttpResponse:
    text = req.get_body().decode("utf-8")
    if req.headers.get("content-type", "").startswith("application/json"):
        work.set(json.loads(text))  # a list of str: one message each
    else:
        work.set(text)
        outbox.set(text)
    return func.HttpResponse(status_code=202)


@app.route(route="enqueue-unreachable", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="out", queue_name="sample-unreachable", connection="SampleUnreachableStorage")
def enqueue_unreachable(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set("never stored")
    return func.HttpResponse(status_code=202)


@app.queue_trigger(arg_name="msg", queue_name="sample-slow", connection="SampleStorage")
def process_slowly(msg: func.QueueMessage) -> None:
    started = time.monotonic()
    time.sleep(0.3)
    RECORD.add("process_slowly", {"body": msg.get_body().decode("utf-8"), "start": started, "end": time.monotonic()})


@app.queue_trigger(arg_name="msg", queue_name="%SAMPLE_WORK_QUEUE%", connection="SampleStorage")
def process_work(msg: func.QueueMessage, context: func.Context) -> None:
    body = msg.get_body().decode("utf-8")
    RECORD.add("process_work", {
        "body": body,
        "dequeue_count": msg.dequeue_count,
        "id": msg.id,
        "invocation_id": context.invocation_id,
        "inserted": msg.insertion_time is not None,
    })
    if body.startswith("fail"):
        raise ValueError("this message is meant to fail")


@app.timer_trigger(schedule="%SAMPLE_NIGHTLY_SCHEDULE%", arg_name="timer")
def nightly(timer: func.TimerRequest) -> None:
    RECORD.add("nightly", timer.past_due)


@app.timer_trigger(schedule="%SAMPLE_HEARTBEAT_SCHEDULE%", arg_name="timer", run_on_startup=True)
def heartbeat(timer: func.TimerRequest) -> None:
    RECORD.add("heartbeat", {"at": time.monotonic(), "next": timer.schedule_status.get("Next")})
