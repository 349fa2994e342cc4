"""Captioning on many processes: `captioner caption --devices N`, or under torchrun / SLURM.

Lightning Fabric launches and connects the processes (`--devices N` starts N - 1 more copies of the command, as
`captioner fit` does; torchrun and srun start them themselves, and Fabric reads their environment; on the CPU
each process gets cores / N threads). Then:
- rank r captions the r-th of every N inputs still to do (a strided share: disjoint, and together all of them);
- after every batch the ranks' rows are gathered, so batch j of all ranks is inputs [j*N*b, (j+1)*N*b) of the
  list, and rank 0 alone writes them, in input order, to the one output (it alone holds the output's lock);
- `--resume` reads the output once, on rank 0, which sends the paths already done to every rank.
Rank 0 carries the exit status (1 when a file failed); the other ranks exit 0 once it is done, since Lightning's
launcher ends the whole run when a child exits non-zero. A single process (no launcher) skips all of this:
`Ranks.single()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Ranks:
    """This process's place among the captioning processes."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # where this rank's model runs; None: as asked (single process)

    @classmethod
    def single(cls) -> Ranks:
        return cls()

    def share(self, items: list[Any]) -> list[Any]:
        """This rank's strided share of `items`."""
        return items[self.rank :: self.world]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj`, on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def merge(self, rows: list[Any]) -> list[Any]:
        """Every rank's rows of one batch, in input order (rank r's k-th row is input k * world + r of the batch),
        on every rank."""
        if self.world == 1:
            return rows
        gathered: list[list[Any]] = [[] for _ in range(self.world)]
        torch.distributed.all_gather_object(gathered, rows)
        longest = max(len(g) for g in gathered)
        return [g[k] for k in range(longest) for g in gathered if k < len(g)]

    def close(self) -> None:
        """Wait for every rank (rank 0 has written everything), then leave the process group; a process that exits
        with the group still open aborts in its C++ destructor."""
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def launch(devices: int | None, num_nodes: int | None, accelerator: str) -> Ranks:
    """Start or join the captioning processes on `accelerator` ("cpu" or "cuda"); a single process when there is
    one device and no launcher."""
    env_devices, env_nodes = launcher_size()
    devices = devices or env_devices
    num_nodes = num_nodes or env_nodes
    if devices * num_nodes == 1:
        return Ranks.single()
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="ddp")
    fabric.launch()
    return Ranks(fabric.global_rank, fabric.world_size, fabric.device)


def launcher_size() -> tuple[int, int]:
    """(processes per node, nodes) set by torchrun or SLURM, else (1, 1)."""
    if "LOCAL_WORLD_SIZE" in os.environ and "WORLD_SIZE" in os.environ and "GROUP_RANK" in os.environ:  # torchrun
        per_node = int(os.environ["LOCAL_WORLD_SIZE"])
        return per_node, max(int(os.environ["WORLD_SIZE"]) // per_node, 1)
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        nodes = int(os.environ.get("SLURM_NNODES", "1"))
        tasks = os.environ.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
        return (int(tasks) if tasks.isdigit() else int(os.environ["SLURM_NTASKS"]) // nodes), nodes
    return 1, 1
