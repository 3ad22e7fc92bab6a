"""Names of the paper's prompt protocols (``engine.evaluation.protocols``), in a module light
enough for the command line's ``--help`` to import."""

PROTOCOL_NAMES = ("boxes", "points3", "points5", "points10", "detector")
