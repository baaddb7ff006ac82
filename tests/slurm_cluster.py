"""A single-node SLURM cluster on this machine, for the tests that submit through ``sbatch``.

Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them when missing): a munge key and
socket, a ``slurm.conf`` naming this host with 2 CPUs, 20,000 MB and one *count-only* GPU (no
device: jobs that ask ``--gres=gpu:1`` are scheduled, and see no GPU), state, spool, logs and pid
files, all under one temporary folder; ``slurmctld`` and ``slurmd`` started as root with
``SLURM_CONF`` pointing at that file, on ports picked free at start (so two clusters on one
machine do not collide). ``python tests/slurm_cluster.py FOLDER`` starts one and prints the
``SLURM_CONF`` to export (docs/usage.md, "Trying the slurm profile on one machine").
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: the commands a cluster needs
SLURM_TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")
START_TIMEOUT = 60

SLURM_CONF = """\
ClusterName=desweep-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=86400
GresTypes=gpu
NodeName={host} CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def missing_tools() -> list[str]:
    """The SLURM and munge commands not on PATH (an empty list when a cluster can start)."""
    return [tool for tool in SLURM_TOOLS if shutil.which(tool) is None]


def skip_reason() -> str | None:
    """Why no cluster can start here, in one line, or None."""
    missing = missing_tools()
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge; .ci/run does)"
    if os.geteuid() != 0:
        return "a test SLURM cluster runs slurmctld and slurmd as root; not root"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    """A running cluster: its folder, and the environment that points ``sbatch`` and friends at it."""

    root: Path
    processes: list[subprocess.Popen]

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *command: str) -> str:
        proc = subprocess.run(command, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{(self.root / name).read_text()[-3000:]}"
                         for name in ("slurmctld.log", "slurmd.log") if (self.root / name).exists())

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_cluster(root: Path, *, cpus: int = 2, memory_mb: int = 20000, gpus: int = 1) -> Cluster:
    """Start munged, slurmctld and slurmd under ``root`` and wait until the node is idle.

    Raises
    ------
    RuntimeError
        When the node does not come up within a minute (the message holds the daemons' logs).
    """
    root.mkdir(parents=True, exist_ok=True)
    for folder in ("munge", "state", "spool"):
        (root / folder).mkdir(exist_ok=True)
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    (root / "slurm.conf").write_text(SLURM_CONF.format(host=host, root=root, cpus=cpus, memory_mb=memory_mb, gpus=gpus,
                                                       ctld_port=free_port(), slurmd_port=free_port()))
    (root / "gres.conf").write_text("".join(f"NodeName={host} Name=gpu File=/dev/null\n" for _ in range(gpus)))
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    munge = ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={root}/munge/munge.socket",
             f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/munge/munged.log", f"--seed-file={root}/munge/seed"]
    daemons = [munge, ["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", host]]
    cluster = Cluster(root, [])
    for command in daemons:
        log = (root / f"{command[0]}.out").open("w")
        cluster.processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True))
        time.sleep(1)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if cluster.run("sinfo", "-h", "-o", "%t").strip() == "idle":
                return cluster
        except RuntimeError:
            pass
        if any(process.poll() is not None for process in cluster.processes):
            break
        time.sleep(1)
    cluster.stop()
    raise RuntimeError(f"the SLURM cluster in {root} did not come up\n{cluster.logs()}")


if __name__ == "__main__":
    started = start_cluster(Path(sys.argv[1]).absolute())
    print(f"export SLURM_CONF={started.conf}")
