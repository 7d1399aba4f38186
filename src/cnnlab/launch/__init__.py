"""How workflow steps start: training jobs forked warm from a process that has imported once,
and a step's log and one-line errors.

Nothing in cnnlab imports this package; it may import every other.
"""
