"""Distributed execution on Ray: GPU-pinned model actors, per-slide writers, a streaming driver."""
