"""biorules: recurrent networks, biologically plausible learning rules, Lyapunov spectra.

Submodules are imported on demand (``biorules.network``, ``biorules.lyapunov``, ...) so that
importing the package stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
