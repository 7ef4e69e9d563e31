"""An example third-party bioprior plugin package."""
