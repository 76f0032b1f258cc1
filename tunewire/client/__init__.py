"""tunewire's Python client. See `tunewire.client.client.Client`."""

from tunewire.client.client import DEFAULT_ADDRESS, TERMINAL_STATES, Client, default_address
from tunewire.client.errors import TunewireError, Violation
from tunewire.client.spec import SpecError, spec_from_dict

__all__ = [
    "DEFAULT_ADDRESS",
    "TERMINAL_STATES",
    "Client",
    "SpecError",
    "TunewireError",
    "Violation",
    "default_address",
    "spec_from_dict",
]
