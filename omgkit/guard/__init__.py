"""The model guard: packages, attestation tokens, licenses, the vendor, the host app.

Recipe layer (few decisions): :class:`Vendor` (seal a model, approve a TA,
issue licenses), :class:`GuardedModel` (the three phases on a device).
Low-level layer, clearly marked: ``omg_ta.package``, ``omg_ta.license``,
``omgkit.guard.token`` and ``omg_ta.cose``.
"""

from omg_ta.license import Policy

from .host import GuardedModel, install_ta
from .vendor import Vendor, VendorClient, VendorServer

__all__ = ["GuardedModel", "Policy", "Vendor", "VendorClient", "VendorServer", "install_ta"]
