"""The cluster recipes of workflows/: configs load strictly, SLURM job script, local recipe runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import make_survey, save_oracle

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
sys.path.insert(0, str(WORKFLOWS))

import cluster_common  # noqa: E402
import cluster_local  # noqa: E402
import cluster_slurm  # noqa: E402


def test_shipped_cluster_configs_load(tmp_path: Path) -> None:
    for module, name in ((cluster_local, "local"), (cluster_slurm, "slurm")):
        recipe = cluster_common.load_recipe(
            cluster_common.CONFIGS / f"{name}.yaml", module.DEFAULTS
        )
        assert recipe["kind"] == name
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: local\nworkerz: 2\n")
    with pytest.raises(SystemExit, match="unknown key.*workerz"):
        cluster_common.load_recipe(bad, cluster_local.DEFAULTS)


def test_slurm_job_script_advertises_gpus(tmp_path: Path, capsys) -> None:
    pytest.importorskip("dask_jobqueue")
    config = tmp_path / "slurm.yaml"
    config.write_text("kind: slurm\ngpus: 1\ncores: 4\nmemory: 8GB\nqueue: gpu\n")
    assert cluster_slurm.main([str(tmp_path), "--cluster-config", str(config), "--job-script"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -p gpu" in script
    assert "--resources GPU=1" in script and "--nthreads 1" in script


@pytest.mark.filterwarnings("ignore:.*not assigned to a building")
def test_local_recipe_processes_a_survey(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    root = make_survey(tmp_path / "survey")
    weights = save_oracle(tmp_path)
    config = tmp_path / "local.yaml"
    config.write_text("kind: local\nworkers: 1\n")
    code = cluster_local.main(
        [str(root), "--cluster-config", str(config), "--weights", str(weights)]
    )
    assert code == 0 and (root / "cracksurvey" / "run.json").exists()
