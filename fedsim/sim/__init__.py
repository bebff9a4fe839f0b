"""The simulation clock and its processes: devices, edges, cloud, costs, availability."""
