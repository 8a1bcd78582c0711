"""hubfleet: run a fleet of JupyterHubs for research and education communities from one fleet file."""

__version__ = "0.1.0"
