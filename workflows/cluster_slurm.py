"""Process a survey on a SLURM cluster: dask-jobqueue submits the worker jobs.

    pip install 'cracksurvey[cluster]'          # dask-jobqueue
    python workflows/cluster_slurm.py SURVEY_DIR --cluster-config configs/cluster/slurm.yaml
    python workflows/cluster_slurm.py SURVEY_DIR --job-script   # print the job script only

Run it on a login node (the client: vectorization and the GeoPackage are written there). The
survey and output folders must be on a filesystem the compute nodes see; the weights are sent
to the workers. If a job dies (pre-emption, time limit), its tiles are rerun on the others; if
the whole allocation ends, rerun the same command: finished images come from the cache. Ctrl-C
or SIGTERM to this script stops the run in order (exit 130 / 143) and cancels the worker jobs.
To run the whole survey inside one SLURM job instead (a local cluster on the node, pre-emption
and time limits handled with ``--requeue`` and ``--signal``), see README, "Interruptions and
concurrent runs".
"""

from __future__ import annotations

import sys

from cluster_common import load_recipe, log, parser, run_on

DEFAULTS = {"kind": "slurm", "jobs": 8, "cores": 8, "memory": "16GB", "walltime": "04:00:00",
            "queue": None, "account": None, "gpus": 0, "job_extra_directives": [],
            "python": None}


def make_cluster(recipe: dict):
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise SystemExit("dask-jobqueue is not installed: pip install 'cracksurvey[cluster]'") from None
    extra = list(recipe["job_extra_directives"])
    worker_extra = ["--nthreads", "1"]
    if recipe["gpus"]:
        extra.append(f"--gres=gpu:{recipe['gpus']}")
        worker_extra += ["--resources", f"GPU={recipe['gpus']}"]
    from cracksurvey.predict import HEAP_ENVIRON

    return SLURMCluster(
        cores=recipe["cores"], processes=1, memory=recipe["memory"],
        walltime=recipe["walltime"], queue=recipe["queue"], account=recipe["account"],
        job_extra_directives=extra, worker_extra_args=worker_extra,
        # glibc allocator settings for the model work, set before the worker starts
        job_script_prologue=[f"export {k}={v}" for k, v in HEAP_ENVIRON.items()],
        python=recipe["python"] or sys.executable,
    )


def main(argv: list[str] | None = None) -> int:
    p = parser("slurm", __doc__.splitlines()[0])
    p.add_argument("--job-script", action="store_true", help="print the job script and exit")
    args = p.parse_args(argv)
    recipe = load_recipe(args.cluster_config, DEFAULTS)
    cluster = make_cluster(recipe)
    if args.job_script:
        print(cluster.job_script())
        return 0
    with cluster:
        cluster.scale(jobs=recipe["jobs"])
        return run_on(cluster.scheduler_address, args, log)


if __name__ == "__main__":
    sys.exit(main())
