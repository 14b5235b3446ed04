"""Token reduction for both layouts: the interface (`base`), r schedules and the per-block cap
(`schedule`), the methods by name (`registry`: `METHODS`, tome, pitome, evit, tofu, random; one
module each, per-clip views in `groups`), and the record a model merges by (`settings`:
`MergeSettings`, set as `model.merging`). A method is one class with `name` and
`match(step) -> Merges`, chosen with `model.set_r(r, method=name)`; it is written once with the
token state's primitives (`step.state.bipartite_matching`, `step.state.clip_view`) and never
branches on the layout (see `base`)."""

from fastast_cli.models.reduction.registry import (
    DEFAULT_METHOD,
    METHODS,
    check_method,
    display_name,
    make_method,
    method_options,
)

__all__ = ["DEFAULT_METHOD", "METHODS", "check_method", "display_name", "make_method",
           "method_options"]
