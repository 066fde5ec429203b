"""boto3 against aiobotocore for kaudit's EKS calls: import and client cost, RSS, request latency.

Each SDK runs in a fresh process that has already imported kopf (the operator has it loaded, and
aiobotocore shares its aiohttp): the time to import the SDK and make the EKS, CloudWatch Logs and
Lambda clients, the RSS that adds, and the latency of DescribeCluster against moto's server on
loopback (started here). aiobotocore is measured only where it is installed
(``pip install aiobotocore`` in a scratch venv; kaudit does not depend on it).

    python bench/bench_aws_sdk.py [--calls 300] [--runs 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from aws_support import MotoServer  # noqa: E402

CHILD = r"""
import asyncio, json, os, statistics, sys, time
which, calls = sys.argv[1], int(sys.argv[2])
import kopf  # noqa: F401  (already loaded in the operator)
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
before, start = rss(), time.perf_counter()
latencies = []
if which == "boto3":
    import boto3
    session = boto3.session.Session()
    eks, logs, lam = (session.client(s) for s in ("eks", "logs", "lambda"))
    ready = time.perf_counter()
    eks.create_cluster(name="bench", roleArn="arn:aws:iam::123456789012:role/r", resourcesVpcConfig={})
    for _ in range(calls):
        t = time.perf_counter(); eks.describe_cluster(name="bench"); latencies.append(time.perf_counter() - t)
else:
    import aiobotocore.session
    async def main():
        global ready
        session = aiobotocore.session.get_session()
        async with session.create_client("eks") as eks, session.create_client("logs"), session.create_client("lambda"):
            ready = time.perf_counter()
            await eks.create_cluster(name="bench", roleArn="arn:aws:iam::123456789012:role/r", resourcesVpcConfig={})
            for _ in range(calls):
                t = time.perf_counter(); await eks.describe_cluster(name="bench"); latencies.append(time.perf_counter() - t)
    asyncio.run(main())
print(json.dumps({"setup_ms": 1000 * (ready - start), "rss_mib": rss() - before,
                  "median_ms": 1000 * statistics.median(latencies),
                  "p90_ms": 1000 * sorted(latencies)[int(0.9 * len(latencies))]}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sdks = [name for name, module in (("boto3", "boto3"), ("aiobotocore", "aiobotocore"))
            if importlib.util.find_spec(module) is not None]
    server = MotoServer().start()
    try:
        env = {**server.env(), "PATH": "/usr/bin:/bin", "AWS_CONFIG_FILE": "/dev/null",
               "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
        results: dict[str, list[dict]] = {sdk: [] for sdk in sdks}
        for _ in range(args.runs):
            for sdk in sdks:  # interleaved, so machine load hits both alike
                server.reset()
                out = subprocess.run([sys.executable, "-c", CHILD, sdk, str(args.calls)], capture_output=True,
                                     text=True, env=env, check=True).stdout
                results[sdk].append(json.loads(out))
    finally:
        server.stop()
    print(f"{'sdk':12} {'import+3 clients':>17} {'RSS added':>10} {'DescribeCluster median':>23} {'p90':>8}"
          f"   (medians of {args.runs} runs, {args.calls} calls each)")
    for sdk, runs in results.items():
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(f"{sdk:12} {med['setup_ms']:>14.0f} ms {med['rss_mib']:>6.1f} MiB {med['median_ms']:>20.2f} ms "
              f"{med['p90_ms']:>5.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
