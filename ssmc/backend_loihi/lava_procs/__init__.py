"""Lava processes and fixed-point process models of ssmc's neuron and synapse groups.

Only process classes (processes.py) and their process models (models.py) live
here: Lava imports every module beside a process when it compiles a network, so
anything else in this folder would be executed too. The semantics are
docs/fixed_point.md; ssmc/backend_loihi/lava_net.py builds networks of these.
"""
