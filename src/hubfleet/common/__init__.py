"""The ground floor: what the fleet side and the hub side share, importing no room above it.

- `settings`: the fleet→hub contract (`HubSettings` and its addresses, the other processes' settings files);
- `state`: the layout of the fleet's state directory;
- `hubapi`: a typed client of one hub's JupyterHub REST API;
- `files`: files and folders only their owner may read;
- `web`: the headers every HTML page is sent with.
"""
