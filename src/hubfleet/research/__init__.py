"""Research hubs: a Dask Gateway per hub (runs as a JupyterHub service next to the hub)."""
