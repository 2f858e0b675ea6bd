"""Helpers every part uses, each written once: one-sentence errors, atomic file writes, progress lines,
the command-line wrapper and the log filters."""
