"""The base layer: what every other layer may use, and which imports nothing of bioprior.

- ``hashing``: content keys (canonical JSON -> hash); ``atomic``: crash-safe files;
- ``paths``: ``BIOPRIOR_HOME`` and ``BIOPRIOR_DATA``; ``devices``: the device a run asks for;
- ``threads``: torch's CPU threads, chosen on purpose; ``allocator``: freed memory kept in-process;
- ``progress``: the reporter the scorer and trainer talk to; ``provenance``: software and hardware
  of a result; ``failures``: the stored error classes;
- ``safe_yaml``: YAML someone else wrote, read without trusting it; ``torchvision_compat``:
  ``import torchvision`` where its compiled ops cannot load.
"""
