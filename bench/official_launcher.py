"""Launcher: python official_launcher.py SRC_DIR [train.py args]; runs SRC_DIR/train.py as is.

Used by bench/vs_official.sh and bench/official_protocol.py to run the official PFedRec code
(Zhangcx19/IJCAI-23-PFedRec) on this machine without editing its files:
 * restores Python <= 3.10's random.sample on sets (removed in 3.11; data.py samples negatives
   from sets; same draws as 3.10: tuple(set));
 * stubs tensorboardX (imported by engine.py, never used);
 * without CUDA, makes .cuda() a no-op and passes --use_cuda '' (engine.py calls .cuda()
   unconditionally in places; argparse's type=bool makes '' the only False).
"""
import collections.abc
import os
import random
import runpy
import sys
import types

src = sys.argv[1]
os.chdir(src)
sys.path.insert(0, src)
_sample = random.sample


def _sample_310(population, k, *, counts=None):   # Python 3.10: sets are sampled as tuple(set)
    if isinstance(population, collections.abc.Set):
        population = tuple(population)
    return _sample(population, k, counts=counts)


random.sample = _sample_310
try:
    import tensorboardX  # noqa: F401
except ImportError:
    stub = types.ModuleType("tensorboardX")
    stub.SummaryWriter = None                      # engine.py imports it; its use is commented out
    sys.modules["tensorboardX"] = stub
import torch  # noqa: E402

extra = []
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    extra = ["--use_cuda", ""]
sys.argv = ["train.py"] + sys.argv[2:] + extra
runpy.run_path("train.py", run_name="__main__")
