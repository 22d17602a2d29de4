"""An op call as a module, for the tools that take modules (torch.onnx.export, fvcore's FlopCountAnalysis)."""
import torch


class Call(torch.nn.Module):
    """``Call(fn)(*args) == fn(*args)``."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)
