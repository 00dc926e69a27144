"""Low-precision execution of the DiT: ModelOpt calibration, NVFP4 / FP8 packing, and low-precision matmuls.

Entry points: `prepare_model` (first-launch step) / `make_model_transform` (the engine's model_transform hook), `plan_for_device`,
`QuantLinear`, `Recipe` / `default_recipe`, and `quant.cli` for `sana-video quantize`. NVIDIA ModelOpt is optional.
"""

from quant.dispatch import ExecutionPlan, plan_for_device
from quant.modules import QuantLinear, replace_linears
from quant.prepare import PrepareReport, make_model_transform, prepare_model
from quant.recipe import DEFAULT_RECIPE, Recipe, default_recipe

__all__ = [
    "ExecutionPlan", "plan_for_device", "QuantLinear", "replace_linears", "PrepareReport", "make_model_transform",
    "prepare_model", "DEFAULT_RECIPE", "Recipe", "default_recipe",
]
