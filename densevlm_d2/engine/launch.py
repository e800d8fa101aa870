"""detectron2's ``launch``, also on CPU-only machines, ending with a clear error when the processes
cannot meet.

detectron2 0.6's ``launch`` asserts CUDA as soon as more than one process is asked for (detectron2
main's falls back to gloo), and when the processes of a run never find each other (a machine rank
out of range, an address nobody listens at, a machine that never starts) it waits for the timeout
and ends with c10d's traceback, or an assertion. :func:`launch` starts the processes as detectron2
does (``mp.spawn``, one per GPU with NCCL, or per CPU process with gloo; detectron2's local process
group), checks the ranks and the address first, and turns a failed meeting into
:class:`ProcessesCannotMeet`, which names the address, the rank, the world size and the timeout.
"""

from __future__ import annotations

import logging
import socket
import sys
from datetime import timedelta
from urllib.parse import urlparse

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm

__all__ = [
    "DEFAULT_TIMEOUT",
    "ProcessesCannotMeet",
    "add_dist_timeout_argument",
    "launch",
    "launch_tool",
]

DEFAULT_TIMEOUT = timedelta(minutes=30)


class ProcessesCannotMeet(RuntimeError):
    """The processes of a run cannot form their process group (ranks, address or timeout)."""


def add_dist_timeout_argument(parser) -> None:
    """``--dist-timeout SECONDS`` (default 30 min), the ``timeout`` of :func:`launch_tool`."""
    parser.add_argument(
        "--dist-timeout",
        type=float,
        default=DEFAULT_TIMEOUT.total_seconds(),
        metavar="SECONDS",
        help="how long the processes wait for each other when they meet and in collectives "
        "(default: %(default)g)",
    )


def launch_tool(main_func, args, tool: str):
    """:func:`launch` of ``main_func(args)`` with a tool's parsed ``--num-gpus``,
    ``--num-machines``, ``--machine-rank``, ``--dist-url`` and ``--dist-timeout``; processes that
    cannot meet end the tool with one error line (exit status 1), not a traceback."""
    if args.dist_timeout <= 0:
        sys.exit(f"{tool}: error: --dist-timeout must be positive, got {args.dist_timeout:g}")
    try:
        return launch(
            main_func,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            timeout=timedelta(seconds=args.dist_timeout),
        )
    except ProcessesCannotMeet as e:
        sys.exit(f"{tool}: error: {e}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def launch(
    main_func,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
):
    """Run ``main_func(*args)`` in ``num_machines * num_gpus_per_machine`` processes (one per GPU,
    or per CPU process when no GPU is available), as detectron2's ``launch`` does. Raises
    :class:`ProcessesCannotMeet` when they cannot meet at ``dist_url`` within ``timeout``."""
    _check_ranks(num_gpus_per_machine, num_machines, machine_rank)
    world_size = num_machines * num_gpus_per_machine
    if world_size == 1:
        return main_func(*args)
    dist_url = _check_url(dist_url, num_machines)
    cuda = torch.cuda.is_available()
    if cuda and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"--num-gpus {num_gpus_per_machine} but this machine has "
            f"{torch.cuda.device_count()} GPUs"
        )
    logging.getLogger(__name__).info(
        "starting %d %s processes of %d at %s", num_gpus_per_machine, "GPU" if cuda else "CPU",
        world_size, dist_url,
    )  # fmt: skip
    try:
        mp.spawn(
            _worker,
            nprocs=num_gpus_per_machine,
            args=(
                main_func,
                world_size,
                num_gpus_per_machine,
                machine_rank,
                dist_url,
                args,
                timeout,
            ),  # fmt: skip
            daemon=False,
        )
    except mp.ProcessRaisedException as e:
        marker = f"{ProcessesCannotMeet.__name__}: "
        if marker not in e.msg:
            raise
        raise ProcessesCannotMeet(e.msg.rsplit(marker, 1)[1].strip()) from None


def _check_ranks(per_machine: int, num_machines: int, machine_rank: int) -> None:
    if per_machine < 1 or num_machines < 1:
        raise ProcessesCannotMeet(
            f"--num-gpus ({per_machine}) and --num-machines ({num_machines}) must be at least 1"
        )
    if not 0 <= machine_rank < num_machines:
        raise ProcessesCannotMeet(
            f"--machine-rank {machine_rank} is out of range for --num-machines {num_machines}: "
            f"the machines are ranked 0 to {num_machines - 1}"
        )


def _check_url(dist_url: str | None, num_machines: int) -> str:
    """``dist_url``, ``auto`` replaced by a free local port; a tcp address must resolve."""
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ProcessesCannotMeet(
                "--dist-url auto is for one machine: with several, give every machine the first "
                "one's address, e.g. tcp://10.0.0.1:29500"
            )
        return f"tcp://127.0.0.1:{_free_port()}"
    url = urlparse(dist_url)
    if url.scheme == "tcp":
        try:
            port = url.port
        except ValueError:
            port = None
        if not url.hostname or port is None:
            raise ProcessesCannotMeet(f"--dist-url {dist_url}: expected tcp://HOST:PORT")
        try:
            socket.getaddrinfo(url.hostname, port)
        except OSError as e:
            raise ProcessesCannotMeet(
                f"--dist-url {dist_url}: cannot resolve the host {url.hostname!r} ({e})"
            ) from None
    return dist_url


def _worker(local_rank, main_func, world_size, per_machine, machine_rank, dist_url, args, timeout):
    rank = machine_rank * per_machine + local_rank
    cuda = torch.cuda.is_available()
    try:
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            init_method=dist_url,
            world_size=world_size,
            rank=rank,
            timeout=timeout,
        )
    except Exception as e:  # c10d's DistError, TimeoutError, RuntimeError, ValueError
        raise ProcessesCannotMeet(
            _cannot_meet(e, dist_url, rank, world_size, machine_rank, per_machine, timeout)
        ) from None
    _local_process_group(world_size, per_machine, machine_rank)
    if cuda:
        torch.cuda.set_device(local_rank)
    comm.synchronize()
    main_func(*args)


def _cannot_meet(error, dist_url, rank, world_size, machine_rank, per_machine, timeout) -> str:
    machines = world_size // per_machine
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
    return (
        f"the processes could not meet at {dist_url} within {timeout.total_seconds():g} s: this "
        f"process is rank {rank} of world size {world_size} (--machine-rank {machine_rank} of "
        f"--num-machines {machines}, {per_machine} per machine). c10d: {reason}. Every machine "
        f"must run with the same --num-machines and --dist-url (machine 0's address and a free "
        f"port, reachable from all), its own --machine-rank (0 to {machines - 1}), and start "
        "within --dist-timeout of the others."
    )


def _local_process_group(world_size: int, per_machine: int, machine_rank: int) -> None:
    """detectron2's group of the processes on this machine (``comm.get_local_rank`` etc.)."""
    if hasattr(comm, "create_local_process_group"):  # detectron2 main
        comm.create_local_process_group(per_machine)
        return
    for i in range(world_size // per_machine):  # detectron2 0.6 keeps it in a module global
        group = dist.new_group(list(range(i * per_machine, (i + 1) * per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
