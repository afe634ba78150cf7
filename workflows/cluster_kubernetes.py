"""Process a survey on Kubernetes.

Two ways:

1. Plain manifest, no operator (configs/cluster/kubernetes.yaml: scheduler Deployment + Service,
   GPU worker Deployment running ``dask worker --resources GPU=1``)::

       kubectl apply -f configs/cluster/kubernetes.yaml
       kubectl port-forward svc/cracksurvey-scheduler 8786:8786 &
       python workflows/cluster_kubernetes.py SURVEY_DIR --scheduler tcp://localhost:8786
       # = cracksurvey process SURVEY_DIR --scheduler tcp://localhost:8786

2. The Dask Kubernetes operator (pip install 'cracksurvey[cluster]', operator installed in
   the cluster)::

       python workflows/cluster_kubernetes.py SURVEY_DIR --image REGISTRY/cracksurvey:TAG \\
           --workers 4 --gpus 1

Workers must see the survey images at the client's paths (mount the share at the same path);
the weights are sent to them.
"""

from __future__ import annotations

import sys

from cluster_common import log, parser, run_on


def main(argv: list[str] | None = None) -> int:
    p = parser("kubernetes", __doc__.splitlines()[0])
    p.add_argument("--scheduler", default=None, help="address of a running scheduler (way 1)")
    p.add_argument("--image", default=None, help="container image with cracksurvey (way 2)")
    p.add_argument("--workers", type=int, default=2, help="workers (way 2)")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per worker (way 2)")
    args = p.parse_args(argv)
    if args.scheduler:
        return run_on(args.scheduler, args, log)
    if not args.image:
        raise SystemExit("give --scheduler ADDRESS (manifest) or --image IMAGE (operator)")
    try:
        from dask_kubernetes.operator import KubeCluster
    except ImportError:
        raise SystemExit("dask-kubernetes is not installed: pip install 'cracksurvey[cluster]'") from None
    resources = {"limits": {"nvidia.com/gpu": str(args.gpus)}} if args.gpus else None
    worker_command = ["dask", "worker", "--nthreads", "1"]
    if args.gpus:
        worker_command += ["--resources", f"GPU={args.gpus}"]
    from cracksurvey.predict import HEAP_ENVIRON

    with KubeCluster(name="cracksurvey", image=args.image, n_workers=args.workers,
                     resources=resources, worker_command=worker_command,
                     env=HEAP_ENVIRON) as cluster:
        return run_on(cluster.scheduler_address, args, log)


if __name__ == "__main__":
    sys.exit(main())
