"""Token reduction for both layouts: the interface (`base`), r schedules and the per-block cap
(`schedule`), and the methods by name (`METHODS`: tome, pitome, evit, tofu, random; one module
each, per-clip views in `groups`). A method is one class with `name` and `match(step) ->
Merges`, set on a model with `model.set_r(r, method=name)`; it is written once with the token
state's primitives (`step.state.bipartite_matching`, `step.state.clip_view`) and never branches
on the layout (see `base`)."""

from fastast_cli.models.reduction.registry import METHODS, make_method, method_options

__all__ = ["METHODS", "make_method", "method_options"]
