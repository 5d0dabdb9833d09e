"""Mixed precision: what ``[train] precision`` (pretrain) and ``finetune --precision`` mean.

=========  ==========================================================================
``"32"``   float32 throughout (the default).
``"bf16"`` forward passes (losses included) under ``torch.autocast`` with bfloat16, on
           CPU or CUDA. bfloat16 has float32's exponent range, so gradients need no
           scaling.
``"16"``   forward passes under ``torch.autocast`` with float16, CUDA only, and a
           ``torch.amp.GradScaler`` that scales the loss before backward (float16
           gradients underflow otherwise) and skips a step whose gradients overflowed.
=========  ==========================================================================

In all three, parameters, gradients, optimiser state and checkpoints stay float32: autocast
casts inside the operations it covers (matrix products, convolutions) and leaves the weights
as they are. Backward passes run outside autocast, as PyTorch recommends; each operation's
gradient takes the dtype its forward used. Validation and embedding run in float32.

"16" on a CPU is refused rather than run without a scaler: float16 gradients of small losses
underflow to zero silently, and CPU autocast gains little from float16.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, get_args

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["Precision", "PRECISIONS", "autocast", "autocast_off", "check_precision", "grad_scaler"]

#: the values of ``[train] precision`` and ``finetune --precision``
Precision = Literal["32", "bf16", "16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: torch dtypes by name: torch is imported where they are used (the command line starts without it)
_DTYPES = {"bf16": "bfloat16", "16": "float16"}

#: one line for the help of the settings that take a precision
PRECISION_HELP = (
    "Arithmetic of the forward passes: 32 (float32), bf16 (bfloat16 autocast, CPU or CUDA) or 16 "
    "(float16 autocast with a gradient scaler, CUDA only); weights and checkpoints stay float32."
)


def check_precision(precision: str, device: torch.device, where: str = "[train] precision") -> None:
    """Refuse a precision this device cannot run, in one line naming ``where`` and a way out."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{where} = {precision!r} is not one of {', '.join(repr(p) for p in PRECISIONS)}")
    if precision == "16" and device.type != "cuda":
        raise ConfigError(
            f'{where} = "16" needs a CUDA device (float16 autocast with a gradient scaler), and '
            f'this run is on {device.type}; use "bf16" (CPU or CUDA) or "32"'
        )
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ConfigError(f'{where} = "bf16" runs on CPU or CUDA, not {device.type}; use "32"')
    import torch

    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f'{where} = "bf16" but {torch.cuda.get_device_name(device)} has no bfloat16 support; '
            'use "16" or "32"'
        )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context the forward passes of a step run in: ``torch.autocast`` on ``device``'s
    type with the precision's dtype, or nothing for ``"32"``."""
    import torch

    dtype = _DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))


@contextmanager
def autocast_off() -> Iterator[None]:
    """Autocast switched off on every device type it is on: for a backward pass called
    inside :func:`autocast`, or an operation that must run in float32."""
    import torch

    with contextlib.ExitStack() as stack:
        for device_type in ("cpu", "cuda"):
            if torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` for ``"16"`` on CUDA, else ``None`` (float32 and bfloat16 need none)."""
    import torch

    if precision == "16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
