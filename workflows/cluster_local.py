"""Process a survey on a local Dask cluster started from configs/cluster/local.yaml.

    python workflows/cluster_local.py SURVEY_DIR [--cluster-config configs/cluster/local.yaml]

Handy to keep one cluster for several surveys, or to give a one-GPU box ``resources: {GPU: 1}``.
"""

from __future__ import annotations

import sys

from cluster_common import load_recipe, log, parser, run_on

DEFAULTS = {"kind": "local", "workers": None, "threads_per_worker": 1, "resources": {}}


def main(argv: list[str] | None = None) -> int:
    from distributed import LocalCluster

    from cracksurvey.engine import default_layout, worker_environ

    args = parser("local", __doc__.splitlines()[0]).parse_args(argv)
    recipe = load_recipe(args.cluster_config, DEFAULTS)
    n_workers = recipe["workers"] or default_layout()[0]
    with worker_environ():  # the allocator settings the engine's own local workers get
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=recipe["threads_per_worker"],
                               resources=recipe["resources"] or None, dashboard_address=":0")
    with cluster:
        return run_on(cluster.scheduler_address, args, log)


if __name__ == "__main__":
    sys.exit(main())
