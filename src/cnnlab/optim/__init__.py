"""How a network learns: optimizers, learning-rate schedules, Lookahead, the L1/L2 penalties.

Imports only the shared top-level modules.
"""
