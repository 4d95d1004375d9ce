"""Overload probe: many closed-loop clients against a running ``defectnas serve`` sized for fewer.

Why: the overload guard (``serve --max-concurrency N --max-queue M``) should tell the excess
clients 503 at once and keep the accepted ones' latency bounded, with no 5xx but 503 and the
server alive afterwards. Client-side latencies include the load generator's own delays (it runs
on the same machine), so the server-side ones are read from the server's ``/metrics`` histogram
(``defectnas_request_duration_seconds{route="/score",status}``): counts of this run's requests
by bucket, from a scrape before and after.

    defectnas serve --model model/ --cache cache/ --port 8000 --max-concurrency 8 --max-queue 8 &
    python benchmarks/overload.py --url http://127.0.0.1:8000 --clients 64 --seconds 5 --ids p0,p1,...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families


async def _client(url: str, body: dict, seconds: float, out: list) -> None:
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60) as c:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            r = await c.post("/score", json=body)
            out.append((r.status_code, time.perf_counter() - start))
            if r.status_code == 503:
                await asyncio.sleep(0.01)  # a client that honours Retry-After would wait longer


def _buckets(url: str) -> dict[str, dict[str, float]]:
    """{status: {le: cumulative count}} of /score's server-side latency histogram."""
    text = httpx.get(url + "/metrics", trust_env=False).text
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "defectnas_request_duration_seconds_bucket" and s.labels.get("route") == "/score":
                out.setdefault(s.labels["status"], {})[s.labels["le"]] = s.value
    return out


async def _run(url: str, body: dict, clients: int, seconds: float) -> list:
    out: list = []
    await asyncio.gather(*(_client(url, body, seconds, out) for _ in range(clients)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--query", default="garden hose")
    ap.add_argument("--ids", required=True, help="comma-separated cached product ids sent in every request")
    args = ap.parse_args()
    body = {"query": args.query, "product_ids": args.ids.split(",")}
    before = _buckets(args.url)
    results = asyncio.run(_run(args.url, body, args.clients, args.seconds))
    after = _buckets(args.url)
    status = np.array([s for s, _ in results])
    ms = np.array([t for _, t in results]) * 1000
    report = {"clients": args.clients, "seconds": args.seconds, "requests": len(results),
              "statuses": {int(s): int((status == s).sum()) for s in np.unique(status)},
              "other_5xx": int(((status >= 500) & (status != 503)).sum()),
              "healthz_after": httpx.get(args.url + "/healthz", trust_env=False).status_code}
    for code in (200, 503):
        if (status == code).any():
            report[f"client_{code}_p50_p99_ms"] = [round(float(np.percentile(ms[status == code], q)), 2) for q in (50, 99)]
        run = {le: n - before.get(str(code), {}).get(le, 0.0) for le, n in after.get(str(code), {}).items()}
        if run.get("+Inf"):
            report[f"server_{code}_share_within_s"] = {le: round(n / run["+Inf"], 3) for le, n in run.items() if le != "+Inf"}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
