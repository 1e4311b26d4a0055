"""rtlib: a real-time collaboration server (websockets + Redis) and a workbench to study its design."""

__version__ = "0.1.0"
__all__ = ["__version__"]
