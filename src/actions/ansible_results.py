# rulehook's notification callback for ansible-playbook: writes what happened, one JSON object
# per line, to the file named by RULEHOOK_ANSIBLE_RESULTS. rulehook reads it after the run (the
# per-host summary and the failed tasks); Ansible's own output on stdout is left as configured.
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: rulehook_results
    type: notification
    short_description: per-host results for rulehook
    description:
      - Writes failed and unreachable tasks and the final per-host counts as JSON lines.
"""


def _payload(result):
    try:
        return result.result
    except AttributeError:
        return result._result


def _host(result):
    host = getattr(result, "host", None) or getattr(result, "_host", None)
    return str(host.get_name()) if host is not None else ""


def _task(result):
    task = getattr(result, "task", None) or getattr(result, "_task", None)
    return str(task.get_name()) if task is not None else ""


def _message(data):
    for key in ("msg", "stderr", "reason"):
        value = data.get(key)
        if value:
            return str(value)[:2000]
    if "results" in data:  # a loop: the first failed item's message
        for item in data.get("results") or []:
            if isinstance(item, dict) and item.get("failed"):
                return _message(item)
    return ""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "rulehook_results"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("RULEHOOK_ANSIBLE_RESULTS")
        self._out = open(path, "a", encoding="utf-8") if path else None

    def _write(self, record):
        if self._out is not None:
            self._out.write(json.dumps(record, default=str) + "\n")
            self._out.flush()

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if ignore_errors:
            return
        self._write({"kind": "failed", "host": _host(result), "task": _task(result),
                     "message": _message(_payload(result))})

    def v2_runner_on_unreachable(self, result):
        self._write({"kind": "unreachable", "host": _host(result), "task": _task(result),
                     "message": _message(_payload(result))})

    def v2_playbook_on_stats(self, stats):
        hosts = {}
        for host in sorted(stats.processed.keys()):
            s = stats.summarize(host)
            hosts[str(host)] = {
                "ok": s["ok"], "changed": s["changed"], "failed": s["failures"],
                "unreachable": s["unreachable"], "skipped": s["skipped"],
                "rescued": s["rescued"], "ignored": s["ignored"],
            }
        self._write({"kind": "stats", "hosts": hosts})
