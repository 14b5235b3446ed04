"""Token reduction for both layouts: the interface (`base`), r schedules and the per-block cap
(`schedule`), and the methods (`tome`). A new method is one class with `name` and
`match(step) -> Merges`, set on a model as `model.reduction`."""
