"""Running one workload as several processes under torchrun (DistributedDataParallel).

gpujobs starts every node with ``torchrun --nnodes N --nproc-per-node G ... -m jobs.<workload>``,
and torchrun hands each process RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
MASTER_PORT. ``join_group`` turns those into a :class:`Group`; without them it returns a group
of one whose every operation is the identity, so a plain ``python -m jobs.<workload>`` run takes
exactly the code path it always took.

The rules the training loops follow, and why:

- Rank 0 alone reads and writes ``--out``: the other ranks may be on machines whose ``--out`` is
  empty or holds a stale copy. Rank 0 reads the checkpoint and broadcasts it (``from_main``).
- Every decision that changes control flow (stop, save now) is agreed with ``any_of``, so all
  ranks run the same collectives in the same order and none waits forever for a peer that left.
- Control messages (flags, objects) go over gloo on the CPU even when the gradients go over NCCL,
  so deciding whether to stop never waits for queued GPU work.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from jobs.common.errors import UsageError
from jobs.common.seeding import seed_everything

T = TypeVar("T")
_RANK_STRIDE = 1_000_003  # keeps (seed, rank) streams apart, as (seed, epoch) in the workloads


@dataclass(frozen=True)
class TorchrunEnv:
    """This process's place in the group, as torchrun describes it in the environment."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    endpoint: str  # MASTER_ADDR:MASTER_PORT, shown on the start-up line


def torchrun_env(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """The torchrun variables, or None for a plain single-process run (no RANK/WORLD_SIZE)."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
    if missing:
        raise UsageError(
            f"RANK and WORLD_SIZE are set but {' and '.join(missing)} not; start a "
            "distributed run through torchrun, or unset RANK and WORLD_SIZE"
        )
    try:
        rank, world_size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", "0"))
        local_world_size = int(env.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError(
            "RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers; "
            "start a distributed run through torchrun"
        ) from None
    if not 0 <= rank < world_size or not 0 <= local_rank < local_world_size:
        raise UsageError(
            f"RANK {rank} of WORLD_SIZE {world_size} (LOCAL_RANK {local_rank} of "
            f"{local_world_size}) is not a place in the group; start it through torchrun"
        )
    endpoint = f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}"
    return TorchrunEnv(rank, world_size, local_rank, local_world_size, endpoint)


class Group:
    """The processes training one model together; a group of one when not under torchrun."""

    def __init__(
        self,
        device: torch.device,
        env: TorchrunEnv | None = None,
        backend: str | None = None,
        control: Any = None,
    ) -> None:
        self.device = device
        self.env = env
        self.backend = backend
        # The process group for flags and objects: gloo (CPU), the default group when that
        # is gloo already, a separate one beside NCCL.
        self._control = control

    @property
    def active(self) -> bool:
        """True under torchrun (even a group of one: it still runs DDP and prints digests)."""
        return self.env is not None

    @property
    def rank(self) -> int:
        return self.env.rank if self.env else 0

    @property
    def world_size(self) -> int:
        return self.env.world_size if self.env else 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that reads and writes --out and prints the results."""
        return self.rank == 0

    def describe(self) -> str:
        """For the start-up line, so a log shows which process it came from."""
        if self.env is None:
            return "single process"
        env = self.env
        return (
            f"distributed rank {env.rank}/{env.world_size} ({self.backend}), "
            f"local rank {env.local_rank}/{env.local_world_size}, device {self.device}, "
            f"rendezvous {env.endpoint}, pid {os.getpid()}"
        )

    def split_rng(self, seed: int) -> None:
        """Give every rank but 0 its own random stream once the model is built from the common
        seed, so dropout masks and augmentations differ between ranks. Rank 0 keeps the stream
        a single process has; a resumed run then restores each rank's own (resume_rank)."""
        if self.active and self.rank > 0:
            seed_everything(seed * _RANK_STRIDE + self.rank, deterministic=False)

    def barrier(self) -> None:
        if self.active:
            dist.barrier(group=self._control)

    def broadcast_object(self, obj: T | None) -> T:
        """Rank 0's ``obj`` on every rank (pickled: it only ever comes from our own rank 0)."""
        if not self.active:
            return obj  # type: ignore[return-value]
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]  # type: ignore[return-value]

    def from_main(self, compute: Callable[[], T]) -> T:
        """``compute()`` run on rank 0 only, its result (or its error) handed to every rank.

        An error must reach the others too: they would otherwise wait in the broadcast until
        torchrun kills them. A user error (JobError) then reads the same on every rank."""
        if not self.active:
            return compute()
        result: Any = None
        error: BaseException | None = None
        if self.is_main:
            try:
                result = compute()
            except Exception as exc:  # re-raised below, after the others have heard of it
                error = exc
        outcome = self.broadcast_object(
            ("ok", result) if error is None else ("error", _portable(error))
        )
        if error is not None:
            raise error
        if outcome[0] == "error":
            raise outcome[1]
        return outcome[1]

    def node_leaders_first(self, prepare: Callable[[], T]) -> T:
        """``prepare()`` on each machine's local rank 0 first, then on that machine's other
        ranks: for steps that write files the ranks of one machine share (generated data, a
        weights download), which the later ones then find already done."""
        if self.env is None:
            return prepare()
        if self.env.local_rank == 0:
            try:
                return prepare()
            finally:
                self.barrier()  # even on an error: the others must not wait for it forever
        self.barrier()
        return prepare()

    def gather_object(self, obj: T) -> list[T] | None:
        """Every rank's ``obj`` in rank order on rank 0, None on the others."""
        if not self.active:
            return [obj]
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, gathered, dst=0, group=self._control)
        return gathered

    def any_of(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on every rank when it is true on any: how a SIGTERM on one machine,
        or one rank's clock saying a checkpoint is due, becomes the whole group's decision."""
        if not self.active:
            return flags
        votes = torch.tensor([int(flag) for flag in flags], dtype=torch.int32)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=self._control)
        return tuple(bool(vote) for vote in votes.tolist())

    def sum_ints(self, *values: int) -> tuple[int, ...]:
        """Host-side counts summed over the group (e.g. the samples every rank trained on)."""
        if not self.active:
            return values
        total = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(total, group=self._control)
        return tuple(int(value) for value in total.tolist())

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """A device tensor summed over the group, as a new tensor (the input is kept)."""
        if not self.active:
            return values
        total = values.clone()
        dist.all_reduce(total)
        return total

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as DDP (gradients averaged over the group), or as it is in a group of one.
        Wrap after restoring a checkpoint: DDP copies rank 0's weights to the others."""
        if not self.active:
            return model
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share of an epoch's sample order, cut as DistributedSampler cuts it
        (padded with the first samples to a multiple of the world size, then every
        world_size-th from this rank), so all ranks take the same number of steps.

        The shuffle itself stays the workload's own (seed, epoch) order: the group as a whole
        then sees the order a single process would, and a resumed run rebuilds it exactly."""
        if not self.active:
            return order
        sampler = DistributedSampler(
            range(len(order)),  # type: ignore[arg-type]  # a Sized is all it reads
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=False,
            drop_last=False,
        )
        positions = torch.tensor(list(sampler), dtype=torch.int64, device=order.device)
        return order[positions]

    def shard_size(self, n: int) -> int:
        """How many samples each rank gets per epoch out of ``n``."""
        return -(-n // self.world_size)

    def checkpoint_extra(self) -> dict[str, Any]:
        """What a checkpoint records about the group; nothing for a plain run, whose
        checkpoints stay as they always were."""
        return {"world_size": self.world_size} if self.active else {}


def single_process_only(prog: str, environ: Mapping[str, str] | None = None) -> None:
    """For a workload without a DDP loop: refuse a torchrun group of more than one process,
    rather than train that many independent copies that all write the same --out."""
    env = torchrun_env(environ)
    if env is not None and env.world_size > 1:
        raise UsageError(
            f"{prog} does not train distributed yet, and torchrun started {env.world_size} "
            "processes; run it as one process (no torchrun, or --nnodes 1 --nproc-per-node 1)"
        )


def saved_world_size(state: Mapping[str, Any]) -> int:
    return int(state.get("extra", {}).get("world_size", 1))


def _portable(error: BaseException) -> BaseException:
    """The error itself when it survives pickling, else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"rank 0 failed: {type(error).__name__}: {error}")
    return error


def _device_for(device: torch.device, env: TorchrunEnv) -> torch.device:
    """One GPU per process, picked by LOCAL_RANK; the CPU as it is."""
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if env.local_rank >= count:
        raise UsageError(
            f"LOCAL_RANK {env.local_rank} needs GPU {env.local_rank} but this machine has "
            f"{count}; start torchrun with --nproc-per-node {count} or fewer"
        )
    return torch.device("cuda", env.local_rank)


@contextmanager
def join_group(device: torch.device, environ: Mapping[str, str] | None = None) -> Iterator[Group]:
    """The group this process trains in (NCCL on GPUs, gloo on CPUs), left cleanly however
    the block ends: after a barrier when it ends normally, so no rank exits (and lets its node
    be torn down) before rank 0 has written the last checkpoint; at once on an error."""
    env = torchrun_env(environ)
    if env is None:
        yield Group(device)
        return
    device = _device_for(device, env)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before NCCL starts, so each rank uses its own GPU
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        rank=env.rank,
        world_size=env.world_size,
        device_id=device if device.type == "cuda" else None,
    )
    try:
        control = dist.new_group(backend="gloo") if backend == "nccl" else None
        group = Group(device, env, backend, control)
        yield group
        group.barrier()
    finally:
        dist.destroy_process_group()


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """A short SHA-256 of a state dict (names, dtypes, shapes, bytes): equal on every rank of
    a healthy DDP run, so each rank prints it at the end and a log shows they agree."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
