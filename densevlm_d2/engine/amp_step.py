"""One training iteration of any model: detectron2's SimpleTrainer with AMP in float16 or bfloat16
and a loss that must stay finite on every process.

Back-port and extension: detectron2 main's ``AMPTrainer(precision=...)`` covers float16 (with a
gradient scaler) and bfloat16 autocast on CUDA; 0.6's ``AMPTrainer`` has float16 only, and both
assert CUDA. :class:`AMPTrainStep` also runs autocast on the CPU and checks the loss on every
process before the optimiser step. When detectron2 0.6 support ends, it can become an
``AMPTrainer`` subclass that adds the finite check.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm

__all__ = ["AMPTrainStep"]


class AMPTrainStep(SimpleTrainer):
    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        amp: bool = False,
        precision: torch.dtype = torch.float16,
    ):
        super().__init__(model, data_loader, optimizer)
        self.amp, self.precision = amp, precision
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
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast(self.device_type, dtype=self.precision, enabled=self.amp):
            loss_dict = self.model(data)
            losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        # After the backward pass: its kernels are queued before the host waits for the loss (the
        # metrics below read it anyway), and a non-finite loss still stops the optimiser step.
        self._check_finite(losses, loss_dict)
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)  # gradient clipping sees true gradients
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

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
