"""Training recipes for stiff neural ODEs (Kim, Ji, Deng, Ma & Rackauckas 2021).

::

    from stiffcore.training import train
    result = train("rober", backend="jax", target=1e-2, out_dir="runs")
    print(result.summary())

A recipe (:mod:`.recipes`) is data; :mod:`.data` makes the observations and scales,
:mod:`.network` the framework-neutral weights, :mod:`.loop` runs any backend's
``Trainer`` with progress, checkpoints (:mod:`.checkpoint`) and figures.  The JAX and
torch trainers live in ``stiffcore.adapters.diffrax.training`` and
``stiffcore.adapters.torchdiffeq.training``.
"""

from .checkpoint import Checkpoint, History, Moments, load_checkpoint, save_checkpoint
from .data import TrainingData, make_data
from .loop import TRAINERS, TrainingResult, train
from .network import forward, init_weights, layer_sizes
from .recipes import RECIPES, Recipe, get_recipe

__all__ = ["Checkpoint", "History", "Moments", "RECIPES", "Recipe", "TRAINERS", "TrainingData", "TrainingResult", "forward",
           "get_recipe", "init_weights", "layer_sizes", "load_checkpoint", "make_data", "save_checkpoint", "train"]
