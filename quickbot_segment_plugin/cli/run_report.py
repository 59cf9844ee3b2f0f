"""What `quickbot-segment run` prints: per block what was delivered, dead-lettered or in doubt, and why.

A run "worked" only when every event it queued was acknowledged by the endpoint; the summary
says so in numbers ("delivered 6 of 6") and the exit status follows it (docs/bot-builders/
local-loop.md lists the statuses).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any, Final, TextIO

from ..delivery import Outcome, OutcomeLedger
from .run_target import RunTarget

EXIT_OK: Final = 0
EXIT_BLOCK_FAILED: Final = 1
EXIT_NOT_DELIVERED: Final = 3
PROGRESS_EVERY: Final = 0.2
_COUNT_PREFIX: Final = re.compile(r"^\d+ event\(s\) ")  # the dead letter's "6 event(s) ...": one event here


def wait_for_delivery(
    ledger: OutcomeLedger,
    message_ids: list[str],
    timeout: float,
    where: str,
    *,
    announced: float,
    err: TextIO = sys.stderr,
) -> None:
    """Wait up to `timeout` for every event's outcome, with a progress line on stderr.

    `announced` is the user's --timeout, counted from before the blocks ran."""
    if not message_ids:
        return
    total = len(message_ids)
    started = time.monotonic()
    deadline = started + timeout
    live = err.isatty()
    print(f"Waiting up to {announced:g} s for {total} event(s) to reach {where} ...", file=err, flush=True)
    done = ledger.settled(message_ids)
    while done < total:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        done = ledger.wait(message_ids, min(PROGRESS_EVERY, remaining))
        if live:
            print(f"\r  {done} of {total} settled ({time.monotonic() - started:.1f} s)", end="", file=err, flush=True)
    if live:
        print(file=err)


def delivery_of(ledger: OutcomeLedger, result: dict[str, Any]) -> dict[str, Any] | None:
    if result.get("status") != "queued" or "message_id" not in result:
        return None
    return ledger.outcome(str(result["message_id"])).as_dict()


def exit_status(results: list[dict[str, Any]]) -> int:
    if any(result["status"] == "failed" for result in results):
        return EXIT_BLOCK_FAILED
    if any(result.get("delivery") and result["delivery"]["outcome"] != Outcome.DELIVERED.value for result in results):
        return EXIT_NOT_DELIVERED
    return EXIT_OK


def print_report(
    results: list[dict[str, Any]],
    target: RunTarget | None,
    received: list[dict[str, Any]] | None,
    *,
    as_json: bool,
    out: Callable[[str], None] = print,
) -> None:
    if as_json:
        out(json.dumps({"results": results, "received": received}, indent=2, ensure_ascii=False))
        return
    for result in results:
        out(f"== block {result['block']}: {_headline(result)}")
        for entry in result["logs"]:
            out(f"   [{entry['level']}] {entry['message']}")
        if "payload" in result:
            out("   payload: " + json.dumps(result["payload"], ensure_ascii=False))
    if target is None:
        return
    out("")
    out(_summary(results, target))
    if received is not None:
        out(f"The temporary collector received {len(received)} event(s):")
        for message in received:
            who = message.get("userId") or message.get("anonymousId") or ""
            what = (
                message.get("event") or message.get("name") or message.get("groupId") or message.get("previousId") or ""
            )
            out(f"   {message.get('type', '?'):<9} {what!s:<28} {who}")


def _headline(result: dict[str, Any]) -> str:
    delivery = result.get("delivery")
    ident = f" (message {result['message_id']})" if "message_id" in result else ""
    if delivery is None:
        return f"{result['status']}{ident}"
    outcome = delivery["outcome"]
    if outcome == Outcome.DELIVERED.value:
        return f"delivered{ident}"
    if outcome == Outcome.PENDING.value:
        return f"queued, no answer yet{ident}"
    detail = _COUNT_PREFIX.sub("", str(delivery["detail"] or ""))
    return f"{outcome}{ident} [{delivery['reason']}]: {detail}"


def _summary(results: list[dict[str, Any]], target: RunTarget) -> str:
    deliveries = [result["delivery"] for result in results if result.get("delivery")]
    count = {outcome: 0 for outcome in Outcome}
    for delivery in deliveries:
        count[Outcome(delivery["outcome"])] += 1
    line = f"Delivered {count[Outcome.DELIVERED]} of {len(deliveries)} event(s) to {target.where}."
    problems = []
    if count[Outcome.DEAD_LETTERED]:
        problems.append(f"{count[Outcome.DEAD_LETTERED]} dead-lettered")
    if count[Outcome.IN_DOUBT]:
        problems.append(f"{count[Outcome.IN_DOUBT]} in doubt (sent, no answer before the deadline)")
    if count[Outcome.PENDING]:
        problems.append(f"{count[Outcome.PENDING]} with no outcome")
    if problems:
        line += " Not delivered: " + ", ".join(problems) + "."
        if count[Outcome.DEAD_LETTERED] or count[Outcome.IN_DOUBT]:
            line += (
                f" They are kept in {target.dead_letter_path}; see them with "
                f"`quickbot-segment dead-letters list --db {target.dead_letter_path}`."
            )
    return line
