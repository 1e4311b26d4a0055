"""The workbench: scenarios, seeded simulated clients, network impairment, an in-process cluster of real
servers on a real Redis, tidy results and charts. Needs the ``lab`` extra (``pip install 'rtlib[lab]'``:
pandas, matplotlib, tqdm).
"""

from rtlib.lab.cluster import Cluster
from rtlib.lab.scenario import Impairment, Scenario

__all__ = ["Cluster", "Impairment", "Scenario"]
