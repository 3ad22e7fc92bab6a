"""Names the command line's ``--help`` lists, in a module light enough for it to import: the
paper's prompt protocols (``engine.evaluation.protocols``) and the scheduler's packings."""

PROTOCOL_NAMES = ("boxes", "points3", "points5", "points10", "detector")
#: ``ScheduleConfig.packing``: the default, then the packings of older versions (newest first).
PACKINGS = ("local-search", "rarest-first", "row-greedy")
