"""The soak's report: every turn checked against its stored history, errors, latency and
the proxy's memory, as a table or JSON."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from typing import Any

import orjson

from proxy.dev.bench.soak_callers import ENGINE_TIMEOUT_S, Conversation
from proxy.dev.bench.soak_procs import Child, Sampler
from proxy.dev.bench.soak_sessions import Verdict, round_errors, verify


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def failure_record(
    conversation: Conversation, stored: list[dict[str, Any]], verdict: Verdict
) -> dict[str, Any]:
    rounds = [
        {
            "kind": kind,
            "request_id": rnd.request_id,
            "user": rnd.user_text,
            "received": rnd.received_text,
            "spoken": rnd.spoken_text,
            "interrupted": rnd.interrupted,
            "retries": rnd.retries,
            "error": rnd.error_code,
        }
        for kind, rnd in zip(conversation.plan.kinds, conversation.rounds, strict=False)
    ]
    keep = ("role", "content", "request_id", "interrupted", "source", "tool_calls", "created_at")
    history = [{k: m.get(k) for k in keep} for m in stored]
    return {
        "task_id": conversation.task_id,
        "profile": conversation.plan.profile,
        "engine_history": conversation.plan.history,
        "problems": verdict.examples,
        "rounds": rounds,
        "stored": history,
    }


def proxy_log_counts(text: str) -> tuple[Counter[str], Counter[str]]:
    """(errors, warnings) of the proxy's JSON log, by logger and message."""
    errors: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    for line in text.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            if line.strip() and "Traceback" in line:
                errors["traceback (unstructured output)"] += 1
            continue
        if not isinstance(entry, dict):
            continue
        label = f"{entry.get('logger')}: {str(entry.get('msg'))[:70]}"
        if entry.get("level") in ("error", "critical"):
            errors[label] += 1
        elif entry.get("level") == "warning":
            warnings[label] += 1
    return errors, warnings


def build_report(
    args: argparse.Namespace,
    conversations: list[Conversation],
    histories: dict[str, list[dict[str, Any]] | str],
    sampler: Sampler,
    elapsed: float,
    proxy: Child,
) -> dict[str, Any]:
    total = Verdict()
    injected: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    ttft: list[float] = []
    grounded = 0
    examples: list[str] = []
    failing: list[dict[str, Any]] = []
    for conversation in conversations:
        rounds = conversation.rounds
        if conversation.crash:
            unexpected[f"session crashed: {conversation.crash[:60]}"] += 1
        for kind, rnd in zip(conversation.plan.kinds, rounds, strict=False):
            kinds[kind] += 1
            good, bad = round_errors(kind, rnd)
            injected.update(good)
            unexpected.update(bad)
            if rnd.first_token_ms is not None:
                ttft.append(rnd.first_token_ms)
            if conversation.plan.profile == "rag" and any(
                isinstance(m, dict) and m.get("sources") for m in rnd.metainfo
            ):
                grounded += 1
        if conversation.result is not None:
            undelivered = sum(1 for c in conversation.result.callbacks if not c.delivered)
            if undelivered:
                unexpected["callback not delivered"] += undelivered
        stored = histories.get(conversation.task_id, "not read")
        if isinstance(stored, str):
            unexpected[f"admin task view failed: {stored}"] += 1
            continue
        verdict = verify(conversation.task_id, rounds, stored)
        if args.dump_failures and (verdict.lost or verdict.duplicated or verdict.mismatched):
            failing.append(failure_record(conversation, stored, verdict))
        for name in ("turns", "ok", "lost", "duplicated", "mismatched"):
            setattr(total, name, getattr(total, name) + getattr(verdict, name))
        examples.extend(verdict.examples[: max(0, 8 - len(examples))])
    if args.dump_failures:
        with open(args.dump_failures, "wb") as out:
            for record in failing:
                out.write(orjson.dumps(record) + b"\n")
    log_errors, log_warnings = proxy_log_counts(proxy.log_text())
    for label, count in log_errors.items():
        unexpected[f"proxy log error: {label}"] += count
    half = args.duration / 2
    rss = [m for t, m in sampler.samples if t <= args.duration]
    profiles = Counter(c.plan.profile for c in conversations)
    report: dict[str, Any] = {
        "config": {
            "sessions": args.sessions,
            "duration_s": args.duration,
            "turns_per_session": args.turns_per_session,
            "think_ms": args.think_ms,
            "seed": args.seed,
            "tools": args.tools,
            "retrieval": not args.no_retrieval,
            "engine_timeout_s": ENGINE_TIMEOUT_S,
        },
        "tasks": len(conversations),
        "tasks_by_profile": dict(profiles),
        "engine_history_tasks": sum(1 for c in conversations if c.plan.history),
        "turns": total.turns,
        "turns_by_kind": dict(kinds),
        "grounded_turns": grounded,
        "elapsed_s": round(elapsed, 1),
        "throughput_turns_per_s": round(total.turns / elapsed, 1) if elapsed else 0.0,
        "ttft_ms": {
            f"p{q}": round(v, 1) if (v := percentile(ttft, q)) is not None else None
            for q in (50, 95, 99)
        },
        "history": {
            "ok": total.ok,
            "lost": total.lost,
            "duplicated": total.duplicated,
            "mismatched": total.mismatched,
            "examples": examples,
        },
        "errors": {"injected": dict(injected), "unexpected": dict(unexpected)},
        "proxy_log_warnings": dict(log_warnings.most_common(8)),
        "rss_mb": {
            "start": round(rss[0], 1) if rss else None,
            "end": round(rss[-1], 1) if rss else None,
            "max": round(max(rss), 1) if rss else None,
            "slope_second_half_mb_per_min": round(sampler.slope_mb_per_min(half, args.duration), 2),
            "after_settle": round(sampler.samples[-1][1], 1) if sampler.samples else None,
            "every_5s": [round(m, 1) for _, m in sampler.samples[::5]],
        },
        "proxy_cpu_percent": round(sampler.cpu_percent(0, args.duration), 1),
    }
    slope = report["rss_mb"]["slope_second_half_mb_per_min"]
    report["passed"] = (
        total.lost == total.duplicated == total.mismatched == 0
        and not unexpected
        and total.turns > 0
        and slope <= args.max_slope
    )
    return report


def render(report: dict[str, Any]) -> str:
    c, h, rss = report["config"], report["history"], report["rss_mb"]
    ttft = report["ttft_ms"]
    rows: list[tuple[str, str]] = [
        ("sessions x duration", f"{c['sessions']} x {c['duration_s']:g} s"),
        ("turns per task, think", f"{c['turns_per_session']}, ~{c['think_ms']:g} ms"),
        ("tasks (profile)", f"{report['tasks']} ({_pairs(report['tasks_by_profile'])})"),
        ("tasks with engine History 4", str(report["engine_history_tasks"])),
        ("turns", str(report["turns"])),
        ("turns by kind", _pairs(report["turns_by_kind"])),
        ("grounded turns (retrieval)", str(report["grounded_turns"])),
        ("throughput", f"{report['throughput_turns_per_s']} turns/s"),
        ("TTFT p50 / p95 / p99", f"{ttft['p50']} / {ttft['p95']} / {ttft['p99']} ms"),
        ("history ok", str(h["ok"])),
        ("LOST turns", str(h["lost"])),
        ("DUPLICATED turns", str(h["duplicated"])),
        ("MISMATCHED turns", str(h["mismatched"])),
        ("injected errors", _pairs(report["errors"]["injected"]) or "none"),
        ("UNEXPECTED errors", _pairs(report["errors"]["unexpected"]) or "none"),
        ("proxy RSS start/end/max", f"{rss['start']} / {rss['end']} / {rss['max']} MB"),
        ("RSS slope (2nd half)", f"{rss['slope_second_half_mb_per_min']} MB/min"),
        ("proxy CPU (one core = 100)", f"{report['proxy_cpu_percent']} %"),
        ("result", "PASS" if report["passed"] else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["proxy soak", "-" * (width + 40)]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    if h["examples"]:
        lines += ["", "examples:", *(f"  {e}" for e in h["examples"])]
    if report["proxy_log_warnings"]:
        lines += ["", "proxy log warnings:"]
        lines += [f"  {n:>6}  {label}" for label, n in report["proxy_log_warnings"].items()]
    return "\n".join(lines) + "\n"


def _pairs(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())
