"""Server-mode FL (FedAvg, STC, CFL, FD, CFD) over the same nodes as gossip.

``p2pfl cluster --mode fedavg|stc|cfl|fd|cfd --nodes N`` starts N workers
(ids 0..N-1, the same node program as gossip) and one coordinator (id N,
label ``"coordinator"``); :mod:`p2pfl.plan` lays out their specs.  Workers talk
only to the coordinator.  The round loop is
:class:`~p2pfl.server.coordinator.Coordinator`, the worker's loop
:class:`~p2pfl.server.worker.Worker`; what differs between modes are the
strategy hooks in :mod:`p2pfl.strategies`.
"""
