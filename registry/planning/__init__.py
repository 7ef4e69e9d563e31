"""Planning, torch-free: what determines a trained model (``spec``), what a benchmark may ask
for (``needs``), jobs as plain data (``jobs``), a job's benchmark built and the trainings it
declares (``declare``), the steps that run them (``steps``), what running a step gives
back (``outcomes``) and steps as plain payloads for other processes (``payloads``).

May import: ``base``, ``hooks``, ``contracts``, ``submissions``.
"""
