print("swarm-sim")
