"""The configuration file every hubfleet hub runs with (`jupyterhub -f <this file>`).

It holds no settings of its own: it reads the hub's `HubSettings` (named by `$HUBFLEET_HUB_SETTINGS`) and
applies them through `hubfleet.hub.config.configure`.
"""

from hubfleet.common.settings import HubSettings
from hubfleet.hub.config import configure

configure(get_config(), HubSettings.read())  # type: ignore[name-defined]  # noqa: F821
