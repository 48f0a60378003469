"""Hardware: electrode arrays, rates → charge-balanced pulses, independent safety limits,
stimulator links, the audit log and the phosphene preview.

Imports nothing from the other npe packages: the safety layer must not depend on the model.
"""
