"""Where a flow's tasks run: threads in the flow's process (the default) or a Dask cluster
through prefect-dask, for fanning studies out over many machines."""

from __future__ import annotations

from typing import Any

from radflow.errors import RadflowError


def task_runner(kind: str, dask_address: str | None = None, dask_workers: int = 2) -> Any:
    """`threads` (Prefect's ThreadPoolTaskRunner) or `dask`: the cluster at `dask_address`,
    or a local cluster of `dask_workers` processes when no address is given."""
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    if kind == "dask":
        try:
            from prefect_dask.task_runners import DaskTaskRunner
        except ImportError:
            raise RadflowError(
                "the dask task runner needs prefect-dask", hint="pip install 'radflow[dask]'"
            ) from None
        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1})
    raise RadflowError(f"unknown task runner {kind!r}", hint="use threads or dask")
