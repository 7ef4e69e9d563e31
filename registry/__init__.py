"""The core, as layers: each subpackage imports only from the layers below it
(``tests/test_layers.py`` enforces it). From the bottom:

==============  ===========================================================================
``base``        hashing, atomic files, paths, devices, threads, progress, provenance, failures
``hooks``       the plugin core: hook specs, entries, loading, precedence
``contracts``   what plugins return: constraint, benchmark, neural data (torch-free)
``toolkit``     what plugins build with: data, layers, objectives, neural metrics
``submissions`` the submission schema, YAML loading, file checks
``planning``    training specs, needs, jobs, steps, outcomes, payloads (torch-free)
``store``       results, claims, weights
``engine``      trainers (solo and batched), streaming, estimates, the step runner
``execution``   local, isolated and Ray executors (handed a worker; never import the engine)
``scoring``     the one scoring sequence, its options, ``--verify``
``report``      the static HTML report
``api``, ``cli`` the Python API and the command line
==============  ===========================================================================

Plugin authors import from :mod:`bioprior.plugin` only.
"""
