"""cf-images-exporter: snapshot a Cloudflare Images catalog into warehouse-ready files."""

__version__ = "0.1.0"
__all__ = ["__version__"]
