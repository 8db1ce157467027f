"""The connector's core: plain, typed Python with no dependency on azure.functions.

Handlers in ``functions/`` parse their trigger, call one function here and map the result
or a ``shared.errors`` exception onto a response. Only ``shared.adapters`` talk to the
network or to a cloud SDK; ``shared.bootstrap`` wires them once per process.
"""
