"""Engine: run the per-tile function over one image, on Dask or in-process.

The only package that imports Dask. For one image, :class:`Engine` builds the tile tasks,
runs them on a ``distributed`` cluster — a :class:`~distributed.LocalCluster` sized to the
machine by default (:mod:`~cracksurvey.engine.cluster`), or an existing scheduler — and streams
the results back to a single writer of the distance map and the mask (COGs, window by window),
gathering the sparse skeleton in image coordinates (:mod:`~cracksurvey.engine.client`). Workers
on this machine put their tiles' pixels into that writer's temporary files themselves and send
back only the skeleton; a photo (JPEG, PNG) is decoded once for all of them
(:mod:`~cracksurvey.engine.decoded`).

Design points:

- **Tasks read their own pixels.** A task gets the image path and a
  :class:`~cracksurvey.tiling.Tile` and reads its window inside the worker; no pixel array
  travels from the client (:mod:`~cracksurvey.engine.worker`).
- **One model per worker, built once; no shared filesystem needed.** The weights file is read
  once on the client; its bytes and card travel in a Dask worker plugin, which the scheduler
  sends to every worker, including workers that join later or replace a dead one. The
  threshold travels with the tasks, as a number.
- **Device per worker.** ``device='auto'`` is resolved in each worker (cuda if that worker sees
  a GPU, else cpu), and so is bf16 support. When the cluster has workers that advertise a
  ``GPU`` resource (``dask worker --resources GPU=1``), tile tasks (the model work) are
  submitted with ``resources={'GPU': 1}`` and run only there.
- **Faults.** A worker that dies mid-task is replaced by its nanny (LocalCluster, ``dask
  worker``) and the scheduler reruns its tasks elsewhere; a task that raises is retried
  ``retries`` times before its image fails.
- **Torch threads are set explicitly** in the worker (Dask sets OMP/MKL threads to 1 in worker
  processes): the cores divided among the task slots by default.
- **Backpressure.** At most ``max_in_flight`` tiles are submitted at any time, so memory is flat
  whatever the image size.
- ``synchronous=True`` runs the very same task function in-process, in tile order, without Dask
  (tests, debugging).
- **Memory kept between tiles.** Local workers start with glibc's allocator told to keep freed
  memory (:data:`cracksurvey.predict.HEAP_ENVIRON`,
  :func:`~cracksurvey.engine.cluster.worker_environ`): otherwise every forward page-faults its
  activations in again. A worker then holds its working set until an image of
  :data:`~cracksurvey.engine.client.RELEASE_AFTER_PX` or more ends with nothing queued.

The measurements behind these choices are in docs/performance.md.
"""

from cracksurvey.engine.client import Engine, ImageResult, ModelSource, run_image
from cracksurvey.engine.cluster import available_cores, default_layout, worker_environ

__all__ = [
    "Engine",
    "ImageResult",
    "ModelSource",
    "available_cores",
    "default_layout",
    "run_image",
    "worker_environ",
]
