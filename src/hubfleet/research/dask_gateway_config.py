"""The configuration file of every hub's Dask Gateway (`dask-gateway-server -f <this file>`).

It holds no settings of its own: it reads the gateway's `GatewaySettings` (named by `$HUBFLEET_GATEWAY_SETTINGS`).
"""

from hubfleet.research.gateway import configure
from hubfleet.research.settings import GatewaySettings

configure(c, GatewaySettings.read())  # type: ignore[name-defined]  # noqa: F821
