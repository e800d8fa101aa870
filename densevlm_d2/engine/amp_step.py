"""One training iteration of any model: detectron2's SimpleTrainer with AMP in float16 or bfloat16,
gradient accumulation over micro-batches, and a loss that must stay finite on every process.

Back-port and extension: detectron2 main's ``AMPTrainer(precision=...)`` covers float16 (with a
gradient scaler) and bfloat16 autocast on CUDA; 0.6's ``AMPTrainer`` has float16 only, and both
assert CUDA. :class:`AMPTrainStep` also runs autocast on the CPU and checks the loss on every
process before the optimiser step. When detectron2 0.6 support ends, it can become an
``AMPTrainer`` subclass that adds the finite check and the accumulation.

One iteration is one optimiser step, whatever ``accumulation_steps`` (k) is: it draws k
micro-batches, weights their losses so that they add up to the loss of one k times larger batch
(:mod:`.accumulation`), runs the backward pass of each (scaled by the AMP gradient scaler in
float16; under DistributedDataParallel in ``no_sync`` for all but the last, whose backward pass
all-reduces the accumulated gradients), checks the loss, writes the effective batch's losses and
steps the optimiser (and the scaler) once.
"""

from __future__ import annotations

import contextlib
import time

import torch
import torch.distributed as dist
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from .accumulation import loss_weights

__all__ = ["AMPTrainStep"]


class AMPTrainStep(SimpleTrainer):
    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        amp: bool = False,
        precision: torch.dtype = torch.float16,
        accumulation_steps: int = 1,
    ):
        super().__init__(model, data_loader, optimizer)
        k = accumulation_steps
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"accumulation_steps must be an integer >= 1, got {k!r}")
        self.amp, self.precision = amp, precision
        #: micro-batches per optimiser step (``SOLVER.ACCUMULATION_STEPS``)
        self.accumulation_steps = accumulation_steps
        #: asked for the last (finite) checkpoint when the loss stops being finite
        self.checkpointer = None
        device = next(model.parameters()).device
        self.device_type = device.type
        # a gradient scaler only for float16 (bfloat16 has float32's range)
        self.grad_scaler = (
            torch.amp.GradScaler(self.device_type) if amp and precision == torch.float16 else None
        )

    def run_step(self):
        assert self.model.training, "the model was left in eval mode"
        start = time.perf_counter()
        batches = [next(self._data_loader_iter) for _ in range(self.accumulation_steps)]
        data_time = time.perf_counter() - start
        weights = self._loss_weights(batches)
        self.optimizer.zero_grad()
        loss_dict = {}
        for i, data in enumerate(batches):
            last = i == len(batches) - 1
            micro = self._forward_backward(data, weights[i] if weights else None, sync=last)
            for k, v in micro.items():
                loss_dict[k] = loss_dict[k] + v if k in loss_dict else v
        # After the backward passes: their kernels are queued before the host waits for the loss
        # (the metrics below read it anyway), and a non-finite loss still stops the optimiser step.
        self._check_finite(sum(loss_dict.values()), loss_dict)
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)  # gradient clipping sees true gradients
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def _forward_backward(self, data, weights, sync: bool) -> dict[str, torch.Tensor]:
        """One micro-batch: its losses times ``weights`` (None: as they are), backward (gradients
        all-reduced only when ``sync``); returns the weighted losses, detached."""
        with self._no_sync(not sync):
            with self._autocast():
                loss_dict = self.model(data)
                if weights is not None:
                    loss_dict = {k: v * weights(k) for k, v in loss_dict.items()}
                losses = sum(loss_dict.values())
            if self.grad_scaler is not None:
                self.grad_scaler.scale(losses).backward()
            else:
                losses.backward()
        return {k: v.detach() for k, v in loss_dict.items()}

    def _autocast(self):
        return torch.autocast(self.device_type, dtype=self.precision, enabled=self.amp)

    def _no_sync(self, skip: bool):
        """DistributedDataParallel's ``no_sync`` when ``skip`` (a micro-batch before the last)."""
        if skip and isinstance(self.model, DistributedDataParallel):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def _loss_weights(self, batches):
        """Each micro-batch's loss weights (None without accumulation), counted by the unwrapped
        model without gradients, under the same autocast as its forward pass."""
        if len(batches) == 1:
            return None
        model = self.model.module if isinstance(self.model, DistributedDataParallel) else self.model
        with torch.no_grad(), self._autocast():
            return loss_weights(model, batches)

    def _check_finite(self, losses: torch.Tensor, loss_dict) -> None:
        """Stop every process together, before the optimiser step, on a non-finite loss."""
        finite = torch.isfinite(losses.detach()).float().reshape(1)
        if comm.get_world_size() > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1:
            values = {k: float(v.detach()) for k, v in loss_dict.items()}
            last = self.checkpointer.last_checkpoint() if self.checkpointer is not None else None
            raise FloatingPointError(
                f"non-finite loss at iteration {self.iter} (on this or another process): "
                f"{values}. Training stopped before the optimiser step. "
                + (
                    f"The last checkpoint, {last}, holds finite weights (checkpoints are only "
                    "written when they do): resume from it with --resume, e.g. with a lower "
                    "SOLVER.BASE_LR or SOLVER.AMP.PRECISION bfloat16."
                    if last
                    else "No checkpoint was written yet: lower SOLVER.BASE_LR or use "
                    "SOLVER.AMP.PRECISION bfloat16 and start again."
                )
            )

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
