"""Built-in plugins. They register through the ``bioprior`` entry-point group like any third party."""
