"""Issue 16's measurements, on loopback: one vs two `sainet serve` replicas behind the repository's
nginx (deploy/nginx/nginx.conf), and the feature store's batch fetch on a three-master Redis Cluster
against one Redis.

    python -m loadtest.scale --model-dir artifacts --out docs/bench/scale          # 5-7 minutes
    python -m loadtest.scale --model-dir artifacts --out /tmp/scale --quick        # 1.5-2.5 minutes

Writes OUT/scale.json, OUT/scale.md, OUT/scale.png and the child processes' logs under OUT/logs.
"""


def main(argv: list[str] | None = None) -> int:
    from loadtest.scale.cli import main as cli_main

    return cli_main(argv)
