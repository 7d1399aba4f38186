"""How the machine was used while a run trained: MLflow's own system-metrics monitor, narrowed to the job.

MLflow's monitor samples CPU and memory (psutil), disk and network every few seconds in a thread
and logs them as `system/...` metrics of the run. Its GPU part (NVML, from nvidia-ml-py) watches
every GPU of the machine, numbered as NVML numbers them; a job pinned to one GPU of several would
log all of them. Here it watches only the GPUs this process trains on, numbered as the job sees
them (`system/gpu_0_...` is cuda:0), and none when the job trains on the CPU.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def job_gpu_indices(nvml_uuids: list[str], job_uuids: list[str]) -> list[int]:
    """NVML indices of the job's GPUs, in the job's order (cuda:0 first).

    NVML names a GPU "GPU-<uuid>"; torch gives the bare uuid. A job GPU NVML does not list
    (a MIG slice, say) is left out.
    """
    bare = [u.removeprefix("GPU-").removeprefix("MIG-") for u in nvml_uuids]
    return [bare.index(u) for u in job_uuids if u in bare]


def _job_gpu_uuids() -> list[str]:
    import torch

    return [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]


def _narrow_gpu_monitor(monitor, on_gpu: bool) -> None:
    from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

    gpu = next((m for m in monitor.monitors if isinstance(m, GPUMonitor)), None)
    if gpu is None:
        return
    if not on_gpu:
        monitor.monitors.remove(gpu)
        return
    import pynvml

    def text(u):
        return u.decode() if isinstance(u, bytes) else u

    nvml_uuids = [text(pynvml.nvmlDeviceGetUUID(h)) for h in gpu.gpu_handles]
    gpu.gpu_handles = [gpu.gpu_handles[i] for i in job_gpu_indices(nvml_uuids, _job_gpu_uuids())]
    gpu.num_gpus = len(gpu.gpu_handles)


def start_monitor(run_id: str, tracking_uri: str, interval_s: float, resuming: bool, on_gpu: bool):
    """A started SystemMetricsMonitor for the run (None when interval_s is 0); stop it with .finish().

    A resumed run continues the metrics' steps where the killed job left them.
    """
    if interval_s <= 0:
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    try:
        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=interval_s, resume_logging=resuming, tracking_uri=tracking_uri
        )
        _narrow_gpu_monitor(monitor, on_gpu)
    except Exception as e:  # a machine without psutil or NVML trains all the same
        log.warning("system metrics are not recorded: %s", e)
        return None
    monitor.start()
    return monitor


def stop_monitor(monitor) -> None:
    """Stop the monitor, logging the samples of its last, unfinished interval too.

    MLflow's monitor publishes once per interval and drops what it sampled since the last one when
    it stops: every job would lose its last interval, and a job shorter than one interval would log
    no system metrics at all.
    """
    monitor.finish()  # stops and joins its thread, then writes what it had published
    try:
        if any(m.metrics for m in monitor.monitors):
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
    except Exception as e:  # MLflow internals of another version: only the tail is lost
        log.warning("the last system-metrics samples are not recorded: %s", e)
