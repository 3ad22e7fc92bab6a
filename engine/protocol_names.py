"""Names the command line's ``--help`` lists, in a module light enough for it to import: the
paper's prompt protocols (``engine.evaluation.protocols``) and the scheduler's packings."""

PROTOCOL_NAMES = ("boxes", "points3", "points5", "points10", "detector")
#: ``ScheduleConfig.packing``: the default, and the row greedy alone (small clusters exact) as before it.
PACKINGS = ("rarest-first", "row-greedy")
